/**
 * A TypeScript client of profile-registry on Node.js: @grpc/grpc-js, with the service definitions
 * loaded at run time from the repository's proto/ by @grpc/proto-loader (no generated or
 * hand-written message classes).
 *
 * Usage: npx tsx profile_client.ts --server HOST:PORT --proto-dir <repo>/proto [--token TOKEN]
 *    or: npx tsc -p . && node dist/profile_client.js --server HOST:PORT --proto-dir <repo>/proto
 * (--token, or env REGISTRY_TOKEN, is sent as `authorization: Bearer <token>` when the server has a
 * tokens file.) Prints one line per step; exits non-zero on the first failed expectation.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

// ---- command line ----

function parseArgs(argv: string[]): { server: string; protoDir: string; token: string } {
  const opts: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(server|proto-dir|token)(?:=(.*))?$/.exec(argv[i]);
    if (!m) fail(`unknown argument ${argv[i]}; usage: --server HOST:PORT --proto-dir DIR [--token TOKEN]`);
    opts[m[1]] = m[2] ?? argv[++i] ?? fail(`--${m[1]} needs a value`);
  }
  if (!opts.server || !opts["proto-dir"]) fail("usage: --server HOST:PORT --proto-dir DIR [--token TOKEN]");
  return { server: opts.server, protoDir: opts["proto-dir"], token: opts.token ?? process.env.REGISTRY_TOKEN ?? "" };
}

function fail(what: string): never {
  console.error(`FAILED: ${what}`);
  process.exit(1);
}

function expect(cond: boolean, what: string): void {
  if (!cond) fail(what);
}

// ---- loading the protos ----

/** Loads profileregistry/v1/*.proto from protoDir and grpc/health/v1/health.proto from ./proto. */
function load(protoDir: string): grpc.GrpcObject {
  const v1 = path.join(protoDir, "profileregistry", "v1");
  const files = fs
    .readdirSync(v1)
    .filter((f) => f.endsWith(".proto"))
    .map((f) => `profileregistry/v1/${f}`);
  const definition = protoLoader.loadSync([...files, "grpc/health/v1/health.proto"], {
    keepCase: true, // field names as in the .proto files: api_key, reveal_secrets, ...
    longs: String, // int64 (revision, ...) as decimal strings
    enums: String, // enum values by name: "PUT", "SERVING"
    defaults: true, // unset fields read back as their defaults
    oneofs: true, // a oneof's set member is named by a virtual field
    includeDirs: [
      protoDir,
      healthProtoDir(), // grpc/health/v1/health.proto
      path.dirname(require.resolve("protobufjs/package.json")), // google/protobuf/*.proto shipped with proto-loader
    ],
  });
  return grpc.loadPackageDefinition(definition);
}

/** tests/clients/node/proto, seen from this file run by tsx or from dist/ compiled by tsc. */
function healthProtoDir(): string {
  const dirs = [path.join(__dirname, "proto"), path.join(__dirname, "..", "proto")];
  return dirs.find((d) => fs.existsSync(path.join(d, "grpc", "health", "v1", "health.proto"))) ?? dirs[0];
}

function service(pkg: grpc.GrpcObject, name: string): grpc.ServiceClientConstructor {
  let node: unknown = pkg;
  for (const part of name.split(".")) node = (node as Record<string, unknown>)[part];
  if (typeof node !== "function") fail(`service ${name} not found in the loaded protos`);
  return node as grpc.ServiceClientConstructor;
}

// ---- calls ----

type Message = Record<string, any>;

function deadline(seconds = 10): Date {
  return new Date(Date.now() + seconds * 1000);
}

/** Calls a unary rpc and resolves with its response (rejects with a grpc.ServiceError). */
function unary(client: grpc.Client, method: string, request: Message, md: grpc.Metadata): Promise<Message> {
  const fn = (client as unknown as Record<string, Function>)[method];
  return new Promise((resolve, reject) => {
    fn.call(client, request, md, { deadline: deadline() }, (err: grpc.ServiceError | null, res: Message) =>
      err ? reject(err) : resolve(res),
    );
  });
}

/** The messages of a server stream, awaited one at a time. */
class StreamReader {
  private queue: Message[] = [];
  private waiters: Array<(m: Message | Error) => void> = [];
  private ended: Error | null = null;

  constructor(readonly call: grpc.ClientReadableStream<Message>) {
    call.on("data", (m: Message) => this.push(m));
    call.on("error", (e: Error) => this.finish(e));
    call.on("end", () => this.finish(new Error("stream ended")));
  }

  private push(m: Message): void {
    const w = this.waiters.shift();
    if (w) w(m);
    else this.queue.push(m);
  }

  private finish(e: Error): void {
    this.ended ??= e;
    for (const w of this.waiters.splice(0)) w(e);
  }

  /** The next message; fails after `seconds` or when the stream ends. */
  async next(seconds = 10): Promise<Message> {
    const queued = this.queue.shift();
    if (queued) return queued;
    if (this.ended) throw this.ended;
    let timer: NodeJS.Timeout | undefined;
    const got = await new Promise<Message | Error>((resolve) => {
      this.waiters.push(resolve);
      timer = setTimeout(() => resolve(new Error(`no stream message within ${seconds} s`)), seconds * 1000);
    });
    clearTimeout(timer);
    if (got instanceof Error) throw got;
    return got;
  }

  /** Reads messages until one satisfies `pred`. */
  async until(pred: (m: Message) => boolean): Promise<Message> {
    for (;;) {
      const m = await this.next();
      if (pred(m)) return m;
    }
  }

  /** Cancels the call and resolves with the status it ends with (CANCELLED). */
  cancel(): Promise<grpc.status> {
    return new Promise((resolve) => {
      this.call.on("status", (s: grpc.StatusObject) => resolve(s.code));
      this.call.cancel();
    });
  }
}

// ---- google.protobuf.Struct, as proto-loader represents it ----
// The well-known types come from protobufjs's bundled definitions, whose field names are camelCase
// (numberValue, structValue, ...) even with keepCase; the oneof `kind` names the member that is set.

function toValue(v: unknown): Message {
  if (v === null || v === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v as Record<string, unknown>) };
}

function toStruct(obj: Record<string, unknown>): Message {
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, toValue(v)])) };
}

function fromValue(v: Message): unknown {
  switch (v.kind) {
    case "numberValue":
      return v.numberValue;
    case "stringValue":
      return v.stringValue;
    case "boolValue":
      return v.boolValue;
    case "listValue":
      return (v.listValue.values ?? []).map(fromValue);
    case "structValue":
      return fromStruct(v.structValue);
    default:
      return null;
  }
}

function fromStruct(s: Message | null | undefined): Record<string, any> {
  return Object.fromEntries(Object.entries(s?.fields ?? {}).map(([k, v]) => [k, fromValue(v as Message)]));
}

// ---- the steps ----

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const pkg = load(args.protoDir);
  const md = new grpc.Metadata();
  if (args.token) md.set("authorization", `Bearer ${args.token}`);
  const credentials = grpc.credentials.createInsecure();

  const Health = service(pkg, "grpc.health.v1.Health");
  const health = new Health(args.server, credentials);
  const check = await unary(health, "Check", { service: "" }, md);
  expect(check.status === "SERVING", `health is ${check.status}`);
  console.log("health SERVING");

  const ProfileService = service(pkg, "profileregistry.v1.ProfileService");
  const profiles = new ProfileService(args.server, credentials);
  // Start from a clean slate, so the example can run any number of times against one server.
  for (const name of ["ts-profile", "ts-watched"]) {
    await unary(profiles, "DeleteProfile", { name, allow_missing: true, force: true }, md);
  }
  console.log("removed earlier runs' profiles");
  const llm = {
    model: "openai/gpt-4o",
    api_key: "sk-node-1",
    temperature: 0.3,
    extra: toStruct({ num_retries: 5, extra_headers: { "X-Team": "Zürich" } }),
  };
  const created = await unary(profiles, "CreateProfile", { profile: { name: "ts-profile", llm } }, md);
  expect(created.revision === "1", `revision ${created.revision}`);
  console.log("created revision 1");

  let got = await unary(profiles, "GetProfile", { name: "ts-profile" }, md);
  expect(got.llm.api_key === "**********", `api_key should be masked, got ${got.llm.api_key}`);
  const extra = fromStruct(got.llm.extra);
  expect(extra.num_retries === 5 && extra.extra_headers?.["X-Team"] === "Zürich", `extra kept verbatim: ${JSON.stringify(extra)}`);
  console.log("masked api_key");
  got = await unary(profiles, "GetProfile", { name: "ts-profile", reveal_secrets: true }, md);
  expect(got.llm.api_key === "sk-node-1", "reveal_secrets should reveal");
  console.log("revealed api_key");

  // ListProfiles, following next_page_token to the last page.
  const names: string[] = [];
  let pageToken = "";
  do {
    const page = await unary(profiles, "ListProfiles", { page_size: 10, page_token: pageToken }, md);
    for (const p of page.profiles) {
      expect(!p.llm.api_key || p.llm.api_key === "**********", `listed ${p.name} with an unmasked api_key`);
      names.push(p.name);
    }
    pageToken = page.next_page_token;
  } while (pageToken);
  expect(names.includes("ts-profile"), `ts-profile not listed: ${names}`);
  console.log(`list has ts-profile (${names.length} profiles)`);

  // WatchProfiles: the current profiles first (initial), then live changes.
  const watch = new StreamReader(
    (profiles as any).WatchProfiles({ send_initial: true }, md) as grpc.ClientReadableStream<Message>,
  );
  const initial = await watch.until((e) => e.name === "ts-profile");
  expect(initial.type === "PUT" && initial.initial === true, `initial event ${JSON.stringify(initial)}`);
  console.log("watch initial PUT ts-profile");
  await unary(profiles, "CreateProfile", { profile: { name: "ts-watched", llm: { model: "openai/gpt-4o-mini" } } }, md);
  const live = await watch.until((e) => e.name === "ts-watched");
  expect(live.type === "PUT" && live.initial === false && live.revision === "1", `live event ${JSON.stringify(live)}`);
  expect(live.profile?.llm?.model === "openai/gpt-4o-mini", `live event profile ${JSON.stringify(live.profile)}`);
  console.log("watch PUT ts-watched");
  const code = await watch.cancel();
  expect(code === grpc.status.CANCELLED, `watch ended with ${grpc.status[code]}`);
  console.log("watch cancelled");

  try {
    await unary(profiles, "GetProfile", { name: "no-such-profile" }, md);
    fail("GetProfile of a missing profile should fail");
  } catch (e) {
    const err = e as grpc.ServiceError;
    expect(err.code === grpc.status.NOT_FOUND, `got ${grpc.status[err.code] ?? err}`);
    console.log("NOT_FOUND mapped to grpc.status.NOT_FOUND");
  }

  health.close();
  profiles.close();
}

main().catch((e) => fail(String(e?.stack ?? e)));
