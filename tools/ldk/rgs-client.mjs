#!/usr/bin/env node
// LDK's own Rapid Gossip Sync client (npm lightningdevkit, the WASM build of rust-lightning) as a
// long-lived worker: the ~1 s WASM initialisation is paid once, then any number of graphs are
// created, fed RGS blobs through RapidGossipSync.update_network_graph_no_std (exactly what LDK
// wallets run), dumped, saved and loaded.
//
// Protocol: JSON lines. On start the worker prints {"ready": true, "versions": {...}, "init_ms"}.
// Then each stdin line is a request {"id", "cmd", ...}; each answer is one stdout line
// {"id", "ok": true, "result": {...}} or {"id", "ok": false, "error": {"kind", "message"}}.
// Bytes travel as base64 (or "hex:..." on input). u64 values are decimal strings.
//
//   new_graph  {network}                      -> {graph, network, chain_hash}
//   load_graph {data}                         -> {graph, network, chain_hash, channels, nodes, ...}
//   save_graph {graph}                        -> {data}              (NetworkGraph.write())
//   free_graph {graph}                        -> {}
//   apply      {graph, blob, now, logs?}      -> {accepted, error, timestamp, channels, nodes, ...}
//              now: unix seconds (int or decimal string) or null (= None: no staleness check
//              and no pruning). logs: minimum level of log records to return, or null.
//   counts     {graph}                        -> {channels, nodes, last_rapid_gossip_sync_timestamp, ...}
//   dump       {graph}                        -> {network, chain_hash, ..., channels: [...], nodes: [...]}
//   version    {}                             -> {versions}
//
// An apply that makes the WASM trap (a Rust panic) is answered with error kind "panic" and the
// worker then exits with status 70: a trapped WASM instance may hold locks forever.
// `apply` with "debug_hold_read_lock": true reproduces the classic binding mistake (applying
// while a read-only view is alive) to prove that path. The worker exits when stdin closes.
import {
  LEVELS, UsageError, chainNames, decodeBytes, describeDecodeError, describeLightningError, dumpGraph,
  emit, graphCounts, hex, loadLdk, makeLogger, parseNetwork, serveJsonLines, takePanicText,
} from "./ldk-common.mjs";

const EXIT_AFTER_PANIC = 70;

let ldk, bindings, versions, initMs;
try {
  ({ ldk, bindings, versions, initMs } = await loadLdk());
} catch (e) {
  emit({ ready: false, error: `cannot initialise lightningdevkit (run make test / npm ci in tools/ldk): ${e && e.stack || e}` });
  process.exit(3);
}

// Log capture: counts always, record texts only while an apply asked for them.
let counts = {};
let capture = null; // {minIndex, records: []}
const logger = makeLogger(ldk, bindings, (level, getRecord) => {
  counts[level] = (counts[level] || 0) + 1;
  if (capture && LEVELS.indexOf(level) >= capture.minIndex) capture.records.push({ level, ...getRecord() });
});
const CHAINS = chainNames(ldk, logger);

const graphs = new Map(); // id -> {graph, rgs, network}
let nextGraph = 1;

function addGraph(graph) {
  const id = nextGraph++;
  const network = CHAINS[hex(graph.get_chain_hash())] || "unknown";
  graphs.set(id, { graph, rgs: ldk.RapidGossipSync.constructor_new(graph, logger), network });
  return id;
}

function graphOf(req) {
  const g = graphs.get(req.graph);
  if (!g) throw new UsageError(`no graph ${JSON.stringify(req.graph)} (create one with new_graph or load_graph)`);
  return g;
}

function lastRgsTimestamp(graph) {
  const t = graph.get_last_rapid_gossip_sync_timestamp();
  return t instanceof ldk.Option_u32Z_Some ? t.some : null;
}

function parseNow(now) {
  if (now === null) return ldk.Option_u64Z.constructor_none();
  if (now === undefined) throw new UsageError("apply needs now: unix seconds, or null for no clock check");
  let v;
  try {
    v = BigInt(now);
  } catch {
    throw new UsageError(`now must be an integer or null, not ${JSON.stringify(now)}`);
  }
  if (v < 0n || v >= 1n << 64n) throw new UsageError("now must fit in a u64");
  return ldk.Option_u64Z.constructor_some(v);
}

function describeSyncError(err) {
  if (err instanceof ldk.GraphSyncError_DecodeError) {
    const detail = describeDecodeError(ldk, err.decode_error);
    return { kind: "DecodeError", detail, message: `DecodeError::${detail}` };
  }
  if (err instanceof ldk.GraphSyncError_LightningError) {
    const le = describeLightningError(err.lightning_error);
    return { kind: "LightningError", detail: le.action, message: le.message };
  }
  return { kind: "unknown", detail: null, message: String(err) };
}

let exitAfterReply = null;

const handlers = {
  version: () => ({ versions, init_ms: Math.round(initMs) }),

  new_graph(req) {
    const net = parseNetwork(ldk, req.network);
    const graph = ldk.NetworkGraph.constructor_new(net.value, logger);
    const id = addGraph(graph);
    return { graph: id, network: net.name, chain_hash: hex(graph.get_chain_hash()) };
  },

  load_graph(req) {
    const r = ldk.NetworkGraph.constructor_read(decodeBytes("data", req.data), logger);
    if (!(r instanceof ldk.Result_NetworkGraphDecodeErrorZ_OK)) {
      throw new UsageError(`not a serialized NetworkGraph: DecodeError::${describeDecodeError(ldk, r.err)}`);
    }
    const id = addGraph(r.res);
    const g = graphs.get(id);
    return {
      graph: id, network: g.network, chain_hash: hex(r.res.get_chain_hash()), ...graphCounts(r.res),
      last_rapid_gossip_sync_timestamp: lastRgsTimestamp(r.res),
    };
  },

  save_graph(req) {
    return { data: Buffer.from(graphOf(req).graph.write()).toString("base64") };
  },

  free_graph(req) {
    graphOf(req);
    graphs.delete(req.graph);
    return {};
  },

  counts(req) {
    const g = graphOf(req);
    return {
      ...graphCounts(g.graph),
      last_rapid_gossip_sync_timestamp: lastRgsTimestamp(g.graph),
      initial_sync_complete: !!g.rgs.is_initial_sync_complete(),
    };
  },

  dump(req) {
    const g = graphOf(req);
    const t0 = performance.now();
    const d = dumpGraph(ldk, g.graph);
    return {
      network: g.network,
      chain_hash: hex(g.graph.get_chain_hash()),
      last_rapid_gossip_sync_timestamp: lastRgsTimestamp(g.graph),
      initial_sync_complete: !!g.rgs.is_initial_sync_complete(),
      ...d,
      dump_ms: performance.now() - t0,
    };
  },

  apply(req) {
    const g = graphOf(req);
    const blob = decodeBytes("blob", req.blob);
    const nowOpt = parseNow(req.now);
    if (req.logs != null && !LEVELS.includes(req.logs)) throw new UsageError(`logs must be one of ${LEVELS.join(", ")} or null`);
    const before = graphCounts(g.graph);
    counts = {};
    capture = req.logs != null ? { minIndex: LEVELS.indexOf(req.logs), records: [] } : null;
    const out = { accepted: false, error: null, timestamp: null, channels_before: before.channels };
    let heldView = req.debug_hold_read_lock ? g.graph.read_only() : null;
    const t0 = performance.now();
    try {
      const res = g.rgs.update_network_graph_no_std(blob, nowOpt);
      out.apply_ms = performance.now() - t0;
      if (res instanceof ldk.Result_u32GraphSyncErrorZ_OK) {
        out.accepted = true;
        out.timestamp = res.res;
      } else {
        out.error = describeSyncError(res.err);
      }
    } catch (e) {
      // A Rust panic traps the WASM ("unreachable"); its text came through console.log.
      out.apply_ms = performance.now() - t0;
      const rust = takePanicText();
      out.error = { kind: "panic", detail: String(e && e.message || e), message: rust || String(e) };
      out.log_counts = counts;
      if (capture) out.logs = capture.records;
      capture = null;
      heldView = null; // never free into a trapped instance
      exitAfterReply = EXIT_AFTER_PANIC;
      out.worker_exiting = true;
      return out;
    } finally {
      if (heldView) heldView.free();
    }
    Object.assign(out, graphCounts(g.graph));
    out.last_rapid_gossip_sync_timestamp = lastRgsTimestamp(g.graph);
    out.log_counts = counts;
    if (capture) out.logs = capture.records;
    capture = null;
    return out;
  },
};

// Answer after each request; exit if a panic poisoned the instance.
const wrapped = Object.fromEntries(
  Object.entries(handlers).map(([name, fn]) => [name, async (req) => {
    if (exitAfterReply !== null) throw new Error("the WASM instance trapped; this worker is exiting");
    const result = await fn(req);
    if (exitAfterReply !== null) setImmediate(() => process.exit(exitAfterReply));
    return result;
  }]),
);

emit({ ready: true, versions, init_ms: Math.round(initMs) });
serveJsonLines(wrapped, () => process.exit(0));
