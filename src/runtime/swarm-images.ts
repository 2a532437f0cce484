// Images on every Swarm node without a registry: the image is saved from the daemon that built it
// (GET /images/{name}/get) and loaded into each node's daemon (POST /images/load), through the
// Engine API. A node that already has the same image id is skipped.
import { DockerApi, isDockerNotFound } from "./docker-api.js";

export interface ImageCopy {
  /** The node's daemon address (its socket path). */
  node: string;
  /** false: the node had the image already. */
  loaded: boolean;
}

/** Copies image (a tag) from the daemon `from` to each daemon in `to`; resolves when every node has it. */
export async function copyImageToNodes(image: string, from: DockerApi, to: DockerApi[]): Promise<ImageCopy[]> {
  const { Id } = await from.inspectImage(image);
  const copies: ImageCopy[] = [];
  // One node at a time: each copy is the whole image, and loads in parallel only fight for the disk.
  for (const node of to) {
    if ((await idOf(node, image)) === Id) {
      copies.push({ node: node.address, loaded: false });
      continue;
    }
    await node.loadImage(await from.exportImage(image));
    const loaded = await idOf(node, image);
    if (loaded !== Id) throw new Error(`loading image "${image}" into ${node.address} gave ${loaded ?? "nothing"}, not ${Id}`);
    copies.push({ node: node.address, loaded: true });
  }
  return copies;
}

async function idOf(api: DockerApi, image: string): Promise<string | undefined> {
  try {
    return (await api.inspectImage(image)).Id;
  } catch (e) {
    if (isDockerNotFound(e)) return undefined;
    throw e;
  }
}
