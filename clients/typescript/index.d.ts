// The factory's signature only: every API type comes from schema.d.ts, generated.
import type { Client, ClientOptions } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type { components, operations, paths } from "./schema.js";
/** The document's schemas by name, e.g. `Schemas["Image"]`. */
export type Schemas = components["schemas"];
/** The RFC 9457 problem document of every error answer. */
export type Problem = components["schemas"]["Problem"];

export interface PictureClientOptions extends ClientOptions {
  /** Sent as `Authorization: Bearer <token>`; a function is asked before each request. */
  token?: string | (() => string | Promise<string>);
}

export declare function createPictureClient(options?: PictureClientOptions): Client<paths>;
