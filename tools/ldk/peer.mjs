#!/usr/bin/env node
// A real LDK Lightning peer on 127.0.0.1 for tests: rust-lightning's PeerManager (BOLT 8, BOLT 1)
// with P2PGossipSync over a NetworkGraph (BOLT 7: gossip_timestamp_filter dumps, range queries,
// live relay), from the npm package lightningdevkit (WASM). No UTXO lookup, so channel
// announcements are accepted after their four signatures verify.
//
//   node peer.mjs [--network bitcoin|testnet|signet|regtest] [--port 0] [--seed HEX32]
//                 [--gossip FILE]... [--graph-in FILE] [--graph-out FILE]
//                 [--tick-ms 100] [--timer-ms 10000] [--log-level warn]
//
// --gossip FILE  records of [u16 big-endian length][message with its 2-byte type], handed to
//                P2PGossipSync one by one (signature checks; the LDK verdicts are counted).
// --graph-in     a NetworkGraph serialized by --graph-out: restores the verified graph, signed
//                messages included, without re-verifying (seconds instead of minutes).
// --tick-ms      PeerManager.process_events() pump. LDK's dump stalls between the last channel
//                and the first node_announcement until the next event; 0 reproduces that.
// --timer-ms     PeerManager.timer_tick_occurred() period (pings, timeouts).
//
// Once listening it prints one JSON line {"listening": true, "node_id", "port", "network",
// "chain_hash", "load", "graph", "versions", "timing"}. Then stdin takes JSON-line requests
// {"id", "cmd", ...} answered like rgs-client.mjs ({"id", "ok", "result"|"error"}):
//   feed {msg}      a gossip message (base64, or "hex:...") handed to LDK as a broadcast: the
//                   PeerManager validates it through P2PGossipSync and relays it to every
//                   connected peer that asked for gossip -> {accepted, broadcast, error}
//   stats {}        -> {channels, nodes, ..., peers: [{node_id, inbound}], from_peers: {node_id:
//                   {gossip: {type: count}, reply_channel_range: [...], reply_short_channel_ids_end: [...]}}}
//                   (what each connected peer sent the route handler: gossip it relayed to us and
//                   its answers to our queries)
//   query {node_id, kind: "channel_range"|"short_ids", first_blocknum, number_of_blocks, scids}
//                   sends that peer a query_channel_range / query_short_channel_ids
//   save_graph {path}, quit {}
// It exits when stdin closes, so a test harness cannot leak it.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import {
  LEVELS, UsageError, chainNames, decodeBytes, describeLightningError, emit, hex, isSome, loadLdk, makeLogger,
  parseNetwork, serveJsonLines, withReadOnly,
} from "./ldk-common.mjs";

// ------------------------------------------------------------------------------- arguments
function parseArgs(argv) {
  const o = { network: "bitcoin", port: 0, seed: "01".repeat(32), gossip: [], graphIn: null, graphOut: null,
    tickMs: 100, timerMs: 10000, logLevel: "warn" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) fail(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case "--network": o.network = val(); break;
      case "--port": o.port = Number(val()); break;
      case "--seed": o.seed = val().toLowerCase(); break;
      case "--gossip": o.gossip.push(val()); break;
      case "--graph-in": o.graphIn = val(); break;
      case "--graph-out": o.graphOut = val(); break;
      case "--tick-ms": o.tickMs = Number(val()); break;
      case "--timer-ms": o.timerMs = Number(val()); break;
      case "--log-level": o.logLevel = val(); break;
      default: fail(`unknown argument ${a}`);
    }
  }
  if (!/^[0-9a-f]{64}$/.test(o.seed)) fail("--seed must be 32 bytes of hex");
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) fail("--port must be 0..65535");
  if (!Number.isInteger(o.tickMs) || o.tickMs < 0) fail("--tick-ms must be an integer >= 0");
  if (!Number.isInteger(o.timerMs) || o.timerMs <= 0) fail("--timer-ms must be a positive integer");
  if (!LEVELS.includes(o.logLevel)) fail(`--log-level must be one of ${LEVELS.join(", ")}`);
  if (o.graphIn && o.gossip.length) fail("--graph-in and --gossip are exclusive");
  return o;
}

function fail(message, code = 2) {
  emit({ listening: false, error: message });
  process.stderr.write(`peer.mjs: ${message}\n`);
  process.exit(code);
}

const opts = parseArgs(process.argv.slice(2));
const t0 = performance.now();
let ldk, bindings, versions;
try {
  ({ ldk, bindings, versions } = await loadLdk());
} catch (e) {
  fail(`cannot initialise lightningdevkit (run make test / npm ci in tools/ldk): ${e && e.stack || e}`, 3);
}
const initMs = performance.now() - t0;

const minLevel = LEVELS.indexOf(opts.logLevel);
const logger = makeLogger(ldk, bindings, (level, getRecord) => {
  if (LEVELS.indexOf(level) < minLevel) return;
  const r = getRecord();
  process.stderr.write(`[ldk ${level}] ${r.module}:${r.line} ${r.msg}\n`);
});

// ----------------------------------------------------------------------------------- graph
let graph;
if (opts.graphIn) {
  let data;
  try {
    data = new Uint8Array(fs.readFileSync(opts.graphIn));
  } catch (e) {
    fail(`cannot read --graph-in: ${e.message}`);
  }
  const r = ldk.NetworkGraph.constructor_read(data, logger);
  if (!r.is_ok()) fail(`--graph-in ${opts.graphIn} is not a serialized NetworkGraph`);
  graph = r.res;
} else {
  let network;
  try {
    network = parseNetwork(ldk, opts.network).value;
  } catch (e) {
    fail(e.message);
  }
  graph = ldk.NetworkGraph.constructor_new(network, logger);
}
const chainHash = hex(graph.get_chain_hash());
const gossipSync = ldk.P2PGossipSync.constructor_new(graph, ldk.Option_UtxoLookupZ.constructor_none(), logger);
const inner = gossipSync.as_RoutingMessageHandler();

const TYPE_NAMES = { 256: "channel_announcement", 257: "node_announcement", 258: "channel_update" };
const READERS = { 256: ldk.ChannelAnnouncement, 257: ldk.NodeAnnouncement, 258: ldk.ChannelUpdate };

/** Parse a wire gossip message (type included) into LDK's struct; throws UsageError. */
function parseGossip(raw) {
  if (raw.length < 2) throw new UsageError("message shorter than its type");
  const type = (raw[0] << 8) | raw[1];
  const reader = READERS[type];
  if (!reader) throw new UsageError(`type ${type} is not a gossip message`);
  const r = reader.constructor_read(raw.subarray(2));
  if (!r.is_ok()) throw new UsageError(`LDK cannot decode this ${TYPE_NAMES[type]}: ${r.err.constructor.name}`);
  return { type, msg: r.res };
}

function handleDirect(type, msg) {
  if (type === 256) return inner.handle_channel_announcement(null, msg);
  if (type === 257) return inner.handle_node_announcement(null, msg);
  return inner.handle_channel_update(null, msg);
}

function loadGossipFile(path) {
  let buf;
  try {
    buf = fs.readFileSync(path);
  } catch (e) {
    fail(`cannot read --gossip ${path}: ${e.message}`);
  }
  const stats = { file: path, accepted: {}, rejected: {}, undecodable: 0, skipped: 0, errors: {} };
  for (const name of Object.values(TYPE_NAMES)) { stats.accepted[name] = 0; stats.rejected[name] = 0; }
  const start = performance.now();
  let off = 0;
  while (off < buf.length) {
    if (off + 2 > buf.length) fail(`--gossip ${path}: truncated record header at byte ${off}`);
    const len = buf.readUInt16BE(off);
    if (off + 2 + len > buf.length) fail(`--gossip ${path}: record at byte ${off} runs past the end`);
    const raw = new Uint8Array(buf.subarray(off + 2, off + 2 + len));
    off += 2 + len;
    const type = raw.length >= 2 ? (raw[0] << 8) | raw[1] : -1;
    if (!(type in TYPE_NAMES)) { stats.skipped++; continue; }
    let parsed;
    try {
      parsed = parseGossip(raw);
    } catch {
      stats.undecodable++;
      continue;
    }
    const res = handleDirect(parsed.type, parsed.msg);
    const name = TYPE_NAMES[type];
    if (res.is_ok()) stats.accepted[name]++;
    else {
      stats.rejected[name]++;
      const e = describeLightningError(res.err).message;
      stats.errors[e] = (stats.errors[e] || 0) + 1;
    }
  }
  stats.ms = Math.round(performance.now() - start);
  return stats;
}

const load = [];
for (const f of opts.gossip) load.push(loadGossipFile(f));
if (opts.graphOut) fs.writeFileSync(opts.graphOut, graph.write());

function graphStats() {
  return withReadOnly(graph, (ro) => {
    const scids = ro.list_channels();
    let signed = 0, directions = 0;
    for (const scid of scids) {
      const ci = ro.channel(scid);
      if (isSome(ci.get_announcement_message())) signed++;
      directions += (isSome(ci.get_one_to_two()) ? 1 : 0) + (isSome(ci.get_two_to_one()) ? 1 : 0);
    }
    const nodes = ro.list_nodes();
    let announced = 0;
    for (const n of nodes) {
      if (ro.node(n).get_announcement_info() instanceof ldk.Option_NodeAnnouncementInfoZ_Some) announced++;
    }
    return { channels: scids.length, channels_with_signed_announcement: signed, directions,
      nodes: nodes.length, nodes_with_announcement: announced };
  });
}

// -------------------------------------------------- route handler: P2PGossipSync + feed events
// PeerManager relays gossip it takes from MessageSendEvent::Broadcast* events after running them
// through the route handler (the same path as LDK's own channel updates). We delegate every call
// to P2PGossipSync and add our fed messages to its event queue; the verdict of the route
// handler's call for a fed message is recorded so `feed` can answer with it.
const injected = [];
let feedVerdict = null; // {pending: true} while a feed is being processed
const isNone = (nodeId) => nodeId === null || nodeId.every((b) => b === 0);

function recordFeed(nodeId, res) {
  if (feedVerdict && feedVerdict.pending && isNone(nodeId)) {
    feedVerdict.pending = false;
    feedVerdict.result = res;
  }
  return res;
}

// What each peer sent the route handler, by its node id (hex): gossip by type, and replies.
const fromPeers = {};
function fromPeer(nodeId) {
  const key = hex(nodeId);
  fromPeers[key] ??= { gossip: {}, reply_channel_range: [], reply_short_channel_ids_end: [] };
  return fromPeers[key];
}
function countGossip(nodeId, type) {
  if (isNone(nodeId)) return;
  const g = fromPeer(nodeId).gossip;
  g[type] = (g[type] || 0) + 1;
}

const routeHandler = ldk.RoutingMessageHandler.new_impl({
  handle_node_announcement: (n, m) => {
    countGossip(n, "node_announcement");
    return recordFeed(n, inner.handle_node_announcement(isNone(n) ? null : n, m));
  },
  handle_channel_announcement: (n, m) => {
    countGossip(n, "channel_announcement");
    return recordFeed(n, inner.handle_channel_announcement(isNone(n) ? null : n, m));
  },
  handle_channel_update: (n, m) => {
    countGossip(n, "channel_update");
    return recordFeed(n, inner.handle_channel_update(isNone(n) ? null : n, m));
  },
  get_next_channel_announcement: (s) => inner.get_next_channel_announcement(s),
  get_next_node_announcement: (s) => inner.get_next_node_announcement(isSome(s) ? s : null),
  peer_connected: (n, i, b) => inner.peer_connected(n, i, b),
  handle_reply_channel_range: (n, m) => {
    fromPeer(n).reply_channel_range.push({
      first_blocknum: m.get_first_blocknum() >>> 0, number_of_blocks: m.get_number_of_blocks() >>> 0,
      sync_complete: !!m.get_sync_complete(), scids: m.get_short_channel_ids().length,
    });
    return inner.handle_reply_channel_range(n, m);
  },
  handle_reply_short_channel_ids_end: (n, m) => {
    fromPeer(n).reply_short_channel_ids_end.push({ full_information: !!m.get_full_information() });
    return inner.handle_reply_short_channel_ids_end(n, m);
  },
  handle_query_channel_range: (n, m) => inner.handle_query_channel_range(n, m),
  handle_query_short_channel_ids: (n, m) => inner.handle_query_short_channel_ids(n, m),
  processing_queue_high: () => inner.processing_queue_high(),
  provided_node_features: () => inner.provided_node_features(),
  provided_init_features: (n) => inner.provided_init_features(n),
}, {
  get_and_clear_pending_msg_events: () => [
    ...gossipSync.as_MessageSendEventsProvider().get_and_clear_pending_msg_events(),
    ...injected.splice(0),
  ],
});

// ------------------------------------------------------------------ peer manager + TCP glue
const nowSecs = () => Math.floor(Date.now() / 1000);
const keys = ldk.KeysManager.constructor_new(new Uint8Array(Buffer.from(opts.seed, "hex")), BigInt(nowSecs()), 0);
const ignoring = ldk.IgnoringMessageHandler.constructor_new();
const erroring = ldk.ErroringMessageHandler.constructor_new();
// Channel messages are refused (ErroringMessageHandler), but unlike a bare ErroringMessageHandler,
// which names no chain, we name the graph's chain as a real LDK node's ChannelManager does: it goes
// into our init's `networks` and peers whose init names only other chains are disconnected.
const erroringChannels = erroring.as_ChannelMessageHandler();
const erroringEvents = erroring.as_MessageSendEventsProvider();
const ourChains = ldk.Option_CVec_ThirtyTwoBytesZZ.constructor_some([graph.get_chain_hash()]);
const channelHandler = ldk.ChannelMessageHandler.new_impl(
  new Proxy({}, {
    get: (_target, name) => (name === "get_chain_hashes" ? () => ourChains
      : (...args) => erroringChannels[name](...args)),
  }),
  { get_and_clear_pending_msg_events: () => erroringEvents.get_and_clear_pending_msg_events() },
);
const peerManager = ldk.PeerManager.constructor_new(
  channelHandler, routeHandler, ignoring.as_OnionMessageHandler(),
  ignoring.as_CustomMessageHandler(), nowSecs(), new Uint8Array(crypto.randomBytes(32)), logger,
  keys.as_NodeSigner());
const nodeId = hex(keys.as_NodeSigner().get_node_id(ldk.Recipient.LDKRecipient_Node).res);

let nextSocketId = 1n;
const sockets = new Set();

/**
 * One SocketDescriptor per TCP socket. Back-pressure both ways: when node's write buffer is
 * full we take no more bytes from LDK (send_data returns 0) until "drain", then tell LDK with
 * write_buffer_space_avail; when LDK asks us to stop reading (read_event -> true) we pause the
 * socket until send_data(..., resume_read=true).
 */
function attach(sock) {
  const id = nextSocketId++;
  let blocked = false;
  let gone = false;
  sockets.add(sock);
  const descriptor = ldk.SocketDescriptor.new_impl({
    send_data(data, resumeRead) {
      if (resumeRead && !gone) sock.resume();
      if (blocked || gone) return 0;
      if (!sock.write(Buffer.from(data))) blocked = true; // node keeps the bytes; stop taking more
      return data.length;
    },
    disconnect_socket() { sock.destroy(); },
    eq: (other) => other.hash() === id,
    hash: () => id,
  });
  const disconnected = () => {
    if (gone) return;
    gone = true;
    sockets.delete(sock);
    peerManager.socket_disconnected(descriptor);
  };
  sock.on("drain", () => {
    if (!blocked || gone) return;
    blocked = false;
    if (!peerManager.write_buffer_space_avail(descriptor).is_ok()) sock.destroy();
    peerManager.process_events();
  });
  sock.on("data", (chunk) => {
    const r = peerManager.read_event(descriptor, new Uint8Array(chunk));
    if (!r.is_ok()) { sock.destroy(); return; }
    if (r.res) sock.pause();
    peerManager.process_events();
  });
  sock.on("end", () => sock.destroy());
  sock.on("close", disconnected);
  sock.on("error", disconnected);
  return descriptor;
}

const server = net.createServer((sock) => {
  sock.setNoDelay(true);
  const d = attach(sock);
  if (!peerManager.new_inbound_connection(d, ldk.Option_SocketAddressZ.constructor_none()).is_ok()) sock.destroy();
});
server.on("error", (e) => fail(`cannot listen: ${e.message}`));

const timer = setInterval(() => { peerManager.timer_tick_occurred(); peerManager.process_events(); }, opts.timerMs);
const pump = opts.tickMs > 0 ? setInterval(() => peerManager.process_events(), opts.tickMs) : null;

// --------------------------------------------------------------------------------- control
function feed(req) {
  const { type, msg } = parseGossip(decodeBytes("msg", req.msg));
  let event;
  if (type === 256) event = ldk.MessageSendEvent.constructor_broadcast_channel_announcement(msg, { ptr: 0n });
  else if (type === 257) event = ldk.MessageSendEvent.constructor_broadcast_node_announcement(msg);
  else event = ldk.MessageSendEvent.constructor_broadcast_channel_update(msg);
  feedVerdict = { pending: true, result: null };
  injected.push(event);
  peerManager.process_events();
  const verdict = feedVerdict;
  feedVerdict = null;
  if (verdict.pending) throw new Error("PeerManager did not process the fed message");
  const res = verdict.result;
  if (res.is_ok()) return { type: TYPE_NAMES[type], accepted: true, broadcast: true, error: null };
  const err = describeLightningError(res.err);
  // PeerManager still relays a message its handler calls a duplicate (IgnoreDuplicateGossip).
  return { type: TYPE_NAMES[type], accepted: false, broadcast: err.action === "IgnoreDuplicateGossip", error: err };
}

function stats() {
  const peers = peerManager.list_peers().map((p) => ({
    node_id: hex(p.get_counterparty_node_id()), inbound: !!p.get_is_inbound_connection(),
  }));
  return { ...graphStats(), peers, from_peers: fromPeers };
}

function query(req) {
  if (typeof req.node_id !== "string" || !/^[0-9a-f]{66}$/.test(req.node_id)) throw new UsageError("query needs node_id");
  const node = new Uint8Array(Buffer.from(req.node_id, "hex"));
  const chain = graph.get_chain_hash();
  let event;
  if (req.kind === "channel_range") {
    const msg = ldk.QueryChannelRange.constructor_new(chain, req.first_blocknum >>> 0, req.number_of_blocks >>> 0);
    event = ldk.MessageSendEvent.constructor_send_channel_range_query(node, msg);
  } else if (req.kind === "short_ids") {
    const scids = BigUint64Array.from((req.scids || []).map((s) => BigInt(s)));
    event = ldk.MessageSendEvent.constructor_send_short_ids_query(node, ldk.QueryShortChannelIds.constructor_new(chain, scids));
  } else {
    throw new UsageError("query kind must be channel_range or short_ids");
  }
  injected.push(event);
  peerManager.process_events();
  return {};
}

function shutdown(code) {
  clearInterval(timer);
  if (pump) clearInterval(pump);
  server.close();
  peerManager.disconnect_all_peers();
  for (const s of sockets) s.destroy();
  process.exit(code);
}

server.listen(opts.port, "127.0.0.1", () => {
  emit({
    listening: true, node_id: nodeId, port: server.address().port,
    network: chainNames(ldk, logger)[chainHash] || null, chain_hash: chainHash,
    load, graph: graphStats(), versions,
    timing: { init_ms: Math.round(initMs), ready_ms: Math.round(performance.now() - t0) },
  });
  serveJsonLines({
    feed,
    stats,
    query,
    save_graph(req) {
      if (typeof req.path !== "string") throw new UsageError("save_graph needs path");
      fs.writeFileSync(req.path, graph.write());
      return { path: req.path };
    },
    quit() { setImmediate(() => shutdown(0)); return {}; },
  }, () => shutdown(0));
});
