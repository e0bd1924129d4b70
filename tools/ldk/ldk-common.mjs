// Shared plumbing for rgs-client.mjs and peer.mjs: loading LDK's WASM, a cheap logger, the
// JSON-lines protocol on stdin/stdout, and reading a NetworkGraph into plain JSON.
//
// Binding rules this module enforces (lightningdevkit 0.1.2-0):
//  * stdout carries only our JSON lines: WASM init prints a banner with console.log and Rust
//    panics arrive as console.log("[fd 2]: ...") fragments, so console.log goes to stderr and
//    the panic text is kept for the error report.
//  * u64 values (scids, msat amounts, capacity) are BigInt in JS; they are written as decimal
//    strings so no JSON reader rounds them.
//  * nullable struct getters return a wrapper whose .ptr is 0n, not null.
//  * NetworkGraph.read_only() holds the graph's lock until .free(); objects obtained through the
//    view point into the locked graph, so everything is copied out before the view is freed.
import * as fs from "node:fs";
import * as readline from "node:readline";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const pkgPath = (name) => require.resolve(`lightningdevkit/${name}`);

// ------------------------------------------------------------------------------ console/panics
const PANIC_LINES_KEPT = 64;
const panicFragments = [];
console.log = (...args) => {
  const line = args.join(" ");
  const m = line.match(/^\[fd \d+\]: ([\s\S]*)$/);
  if (m) {
    panicFragments.push(m[1]);
    if (panicFragments.length > PANIC_LINES_KEPT) panicFragments.shift();
  }
  process.stderr.write(line + "\n");
};

/** The text of the last Rust panic (joined fragments, first line), then forget it. */
export function takePanicText() {
  const text = panicFragments.join("").split("\n").find((l) => l.trim() !== "") || "";
  panicFragments.length = 0;
  return text;
}

// ---------------------------------------------------------------------------------- loading
/** Initialise the WASM once; returns the module, its raw bindings and version strings. */
export async function loadLdk() {
  const t0 = performance.now();
  const ldk = await import("lightningdevkit");
  const bindings = await import("lightningdevkit/bindings.mjs");
  const banner = [];
  const log = console.log;
  console.log = (...a) => banner.push(a.join(" "));
  try {
    await ldk.initializeWasmFromBinary(fs.readFileSync(pkgPath("liblightningjs.wasm")));
  } finally {
    console.log = log;
  }
  const text = banner.join(" ");
  const versions = {
    npm_package: JSON.parse(fs.readFileSync(pkgPath("package.json"), "utf8")).version,
    ldk: (text.match(/with LDK (\S+)/) || [])[1] || null,
    c_bindings: (text.match(/LDK-C-Bindings (\S+)/) || [])[1] || null,
  };
  return { ldk, bindings, versions, initMs: performance.now() - t0 };
}

export const LEVELS = ["gossip", "trace", "debug", "info", "warn", "error"];

/**
 * A Logger that costs almost nothing per record. LDK logs 5-6 Gossip records per channel; the
 * public Logger.new_impl wraps every record in a FinalizationRegistry-tracked object, which
 * roughly doubles the time to apply a large RGS blob. We register through the same raw binding
 * new_impl uses, read only the level, and build the Record wrapper only when the sink asks for
 * the text. The record is passed by value, so we free it ourselves.
 * `sink(levelName, getRecord)` where getRecord() returns {level, module, line, msg}.
 */
export function makeLogger(ldk, bindings, sink) {
  const names = {};
  for (const n of LEVELS) names[ldk.Level[`LDKLevel_${n[0].toUpperCase()}${n.slice(1)}`]] = n;
  const impl = {
    log(recordPtr) {
      try {
        sink(names[bindings.Record_get_level(recordPtr)] || "unknown", () => {
          const r = new ldk.Record(null, recordPtr);
          const out = { module: r.get_module_path(), line: r.get_line(), msg: r.get_args() };
          // the wrapper now owns the pointer and frees it when collected
          recordPtr = 0n;
          return out;
        });
      } finally {
        if (recordPtr !== 0n) bindings.Record_free(recordPtr);
      }
    },
  };
  const [ptr, idx] = bindings.LDKLogger_new(impl);
  const logger = new ldk.Logger(null, ptr);
  logger.instance_idx = idx;
  logger.bindings_instance = impl; // the bindings hold only a WeakRef to impl
  return logger;
}

// ---------------------------------------------------------------------------------- networks
export function networkTable(ldk) {
  return {
    bitcoin: ldk.Network.LDKNetwork_Bitcoin,
    testnet: ldk.Network.LDKNetwork_Testnet,
    regtest: ldk.Network.LDKNetwork_Regtest,
    signet: ldk.Network.LDKNetwork_Signet,
  };
}

export function parseNetwork(ldk, name) {
  const key = String(name).toLowerCase() === "mainnet" ? "bitcoin" : String(name).toLowerCase();
  const table = networkTable(ldk);
  if (!(key in table)) {
    throw new UsageError(`unknown network ${JSON.stringify(name)}; LDK 0.1 knows ${Object.keys(table).join(", ")}`);
  }
  return { name: key, value: table[key] };
}

/** chain hash hex -> network name, asked from LDK itself. */
export function chainNames(ldk, logger) {
  const out = {};
  for (const [name, value] of Object.entries(networkTable(ldk))) {
    out[hex(ldk.NetworkGraph.constructor_new(value, logger).get_chain_hash())] = name;
  }
  return out;
}

// ---------------------------------------------------------------------------------- helpers
export class UsageError extends Error {}

export const hex = (u8) => Buffer.from(u8).toString("hex");
export const isSome = (o) => o !== null && o !== undefined && o.ptr !== 0n && o.ptr !== 0;

export function decodeBytes(field, value) {
  if (typeof value !== "string") throw new UsageError(`${field} must be a string`);
  if (value.startsWith("hex:")) return new Uint8Array(Buffer.from(value.slice(4), "hex"));
  return new Uint8Array(Buffer.from(value, "base64"));
}

/** Features as the wire writes them (big-endian hex); LDK keeps them little-endian. */
export const featuresHex = (f) => hex(Uint8Array.from(f.le_flags()).reverse());

export function describeDecodeError(ldk, de) {
  if (de instanceof ldk.DecodeError_Io) {
    return `Io(${String(ldk.IOError[de.io] || de.io).replace(/^LDKIOError_/, "")})`;
  }
  return de && de.constructor ? de.constructor.name.replace(/^DecodeError_/, "") : String(de);
}

export function describeLightningError(le) {
  const action = le.get_action();
  return {
    message: le.get_err(),
    action: action && action.constructor ? action.constructor.name.replace(/^ErrorAction_/, "") : null,
  };
}

/** Run fn(view) with the graph's read-only view and always release the lock. */
export function withReadOnly(graph, fn) {
  const ro = graph.read_only();
  try {
    return fn(ro);
  } finally {
    ro.free();
  }
}

export function graphCounts(graph) {
  return withReadOnly(graph, (ro) => ({ channels: ro.list_channels().length, nodes: ro.list_nodes().length }));
}

function direction(cui) {
  if (!isSome(cui)) return null;
  const fees = cui.get_fees();
  return {
    fee_base_msat: fees.get_base_msat(),
    fee_proportional_millionths: fees.get_proportional_millionths(),
    cltv_expiry_delta: cui.get_cltv_expiry_delta(),
    htlc_minimum_msat: cui.get_htlc_minimum_msat().toString(),
    htlc_maximum_msat: cui.get_htlc_maximum_msat().toString(),
    enabled: !!cui.get_enabled(),
    last_update: cui.get_last_update(),
  };
}

export function channelRecord(ldk, ro, scid) {
  const ci = ro.channel(scid);
  if (!isSome(ci)) return null;
  const cap = ci.get_capacity_sats();
  return {
    scid: scid.toString(),
    node_one: hex(ci.get_node_one().as_slice()),
    node_two: hex(ci.get_node_two().as_slice()),
    features: featuresHex(ci.get_features()),
    capacity_sats: cap instanceof ldk.Option_u64Z_Some ? cap.some.toString() : null,
    has_signed_announcement: isSome(ci.get_announcement_message()),
    one_to_two: direction(ci.get_one_to_two()),
    two_to_one: direction(ci.get_two_to_one()),
  };
}

export function nodeRecord(ldk, ro, nodeId) {
  const ni = ro.node(nodeId);
  if (!isSome(ni)) return null;
  const info = ni.get_announcement_info();
  let announcement = null;
  if (info instanceof ldk.Option_NodeAnnouncementInfoZ_Some) {
    const a = info.some;
    announcement = {
      features: featuresHex(a.features()),
      last_update: a.last_update(),
      rgb: hex(a.rgb()),
      alias: hex(a.alias().get_a()),
      addresses: a.addresses().map((s) => ({ hex: hex(s.write()), text: s.to_str() })),
      relayed: isSome(a.announcement_message()),
    };
  }
  return {
    node_id: hex(nodeId.as_slice()),
    channels: Array.from(ni.get_channels(), (s) => s.toString()),
    announcement,
  };
}

/** Every channel and node of the graph as plain JSON-ready objects, sorted. */
export function dumpGraph(ldk, graph) {
  return withReadOnly(graph, (ro) => {
    const scids = Array.from(ro.list_channels()).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const channels = scids.map((s) => channelRecord(ldk, ro, s));
    const nodes = Array.from(ro.list_nodes(), (n) => nodeRecord(ldk, ro, n));
    nodes.sort((a, b) => (a.node_id < b.node_id ? -1 : a.node_id > b.node_id ? 1 : 0));
    return { channels, nodes };
  });
}

// ------------------------------------------------------------------------- JSON lines I/O
/** JSON with BigInt as decimal strings (a safety net; fields are converted explicitly). */
export function jsonLine(obj) {
  return JSON.stringify(obj, (_k, v) => (typeof v === "bigint" ? v.toString() : v)) + "\n";
}

export function emit(obj) {
  process.stdout.write(jsonLine(obj));
}

/**
 * Serve JSON-line requests {id?, cmd, ...} from stdin, one at a time, answering
 * {id, ok: true, result} or {id, ok: false, error: {kind, message}}. `handlers[cmd](req)` may be
 * async. `onClose` runs when stdin closes (the parent is gone or done).
 */
export function serveJsonLines(handlers, onClose) {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let chain = Promise.resolve();
  rl.on("line", (line) => {
    if (line.trim() === "") return;
    chain = chain.then(() => handleLine(handlers, line));
  });
  rl.on("close", () => chain.then(onClose));
}

async function handleLine(handlers, line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    emit({ id: null, ok: false, error: { kind: "usage", message: `not JSON: ${e.message}` } });
    return;
  }
  const id = req.id ?? null;
  const handler = Object.hasOwn(handlers, req.cmd) ? handlers[req.cmd] : null;
  if (!handler) {
    emit({ id, ok: false, error: { kind: "usage", message: `unknown cmd ${JSON.stringify(req.cmd)}` } });
    return;
  }
  try {
    const result = await handler(req);
    emit({ id, ok: true, result });
  } catch (e) {
    const usage = e instanceof UsageError;
    const message = usage ? e.message : e && e.stack ? String(e.stack) : String(e);
    emit({ id, ok: false, error: { kind: usage ? "usage" : "internal", message } });
  }
}
