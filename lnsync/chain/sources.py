"""Chain sources: thin HTTP clients that fetch the facts :mod:`lnsync.chain.funding` judges.

* :class:`BitcoindRpc`: bitcoind's JSON-RPC (``getblockcount``, ``getblockhash``, ``getblock`` with
  verbosity 1, ``getrawtransaction`` with the block hash, so no ``txindex`` is needed, and
  ``gettxout`` for spentness), authenticated by the cookie file or a user and a password read from a
  file (a Kubernetes Secret mounted as one). bcoin's bitcoind-compatible RPC works too (with
  ``--index-tx``).
* :class:`Esplora`: an Esplora-compatible REST API (``/blocks/tip/height``, ``/block-height/H``,
  ``/block/HASH/txids``, ``/tx/TXID``, ``/tx/TXID/outspend/N``).

Every failure to get an answer (connection refused, timeout, an HTTP error other than "not found",
an answer that does not parse as what the API documents) is :class:`ChainUnavailable`: the caller
holds the announcement and asks again, it never counts as a verdict.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import aiohttp

MAX_ANSWER = 64 * 1024 * 1024  # a verbose mainnet block's txid list is ~0.3 MB; a tx far less


class ChainUnavailable(Exception):
    """The source did not answer usefully (down, slow, an error, garbage): ask again later."""


class RpcError(ChainUnavailable):
    """A JSON-RPC error answer (other than "not found")."""

    def __init__(self, message: str, code: Any) -> None:
        super().__init__(message)
        self.code = code


class ChainSource(Protocol):
    name: str

    async def tip_height(self) -> int: ...

    async def block(self, height: int) -> tuple[str, list[str]] | None:
        """(hash, txids in order) of the block at ``height``, or None if the source has none there."""
        ...

    async def output(self, txid: str, block_hash: str, index: int) -> tuple[bytes, int] | None:
        """(scriptPubKey, value in sats) of an output, or None if the transaction has no such one."""
        ...

    async def is_spent(self, txid: str, index: int) -> bool | None:
        """Whether the output is spent (None: the source cannot tell)."""
        ...

    async def close(self) -> None: ...


def _sats(btc: Any) -> int:
    """A bitcoind amount (BTC, parsed as Decimal) in satoshis, exactly."""
    value = Decimal(btc) * 100_000_000
    if value != value.to_integral_value() or value < 0:
        raise ChainUnavailable(f"not an amount: {btc!r}")
    return int(value)


def _hex(value: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        raise ChainUnavailable(f"{what} is not hex: {value!r:.80}") from None


def _txid(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 64:
        raise ChainUnavailable(f"not a txid: {value!r:.80}")
    _hex(value, "txid")
    return value


class _Http:
    """HTTP to a chain source. aiohttp is imported when a source is made, not with this module:
    a downloader without a chain source starts ~0.2 s of CPU sooner (one pod per peer)."""

    def __init__(self, base: str, timeout: float, headers: dict[str, str] | None = None) -> None:
        import aiohttp

        self.base = base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = headers or {}
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        import aiohttp

        try:
            async with self.session().request(method, self.base + path, data=body) as resp:
                data = await resp.content.read(MAX_ANSWER + 1)
                if len(data) > MAX_ANSWER:
                    raise ChainUnavailable(f"{path}: answer larger than {MAX_ANSWER} bytes")
                return resp.status, data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ChainUnavailable(f"{self.base}{path}: {exc!r}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class Esplora:
    """An Esplora-compatible REST API at ``url`` (e.g. ``http://127.0.0.1:3002/api``)."""

    name = "esplora"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._http = _Http(url, timeout)

    async def _get(self, path: str) -> bytes | None:
        status, data = await self._http.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise ChainUnavailable(f"GET {path}: HTTP {status}")
        return data

    async def _json(self, path: str) -> Any:
        data = await self._get(path)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise ChainUnavailable(f"GET {path}: not JSON") from None

    async def tip_height(self) -> int:
        data = await self._get("/blocks/tip/height")
        if data is None or not data.strip().isdigit():
            raise ChainUnavailable(f"/blocks/tip/height: not a height: {data!r:.80}")
        return int(data)

    async def block(self, height: int) -> tuple[str, list[str]] | None:
        raw_hash = await self._get(f"/block-height/{height}")
        if raw_hash is None:
            return None
        block_hash = _txid(raw_hash.decode("ascii", "replace").strip())
        txids = await self._json(f"/block/{block_hash}/txids")
        if not isinstance(txids, list):
            raise ChainUnavailable(f"txids of block {height}: not a list")
        return block_hash, [_txid(t) for t in txids]

    async def output(self, txid: str, block_hash: str, index: int) -> tuple[bytes, int] | None:
        tx = await self._json(f"/tx/{txid}")
        try:
            vout = tx["vout"]
            if index >= len(vout):
                return None
            out = vout[index]
            value = out["value"]
            if not isinstance(value, int) or value < 0:
                raise ChainUnavailable(f"tx {txid}: bad value {value!r:.40}")
            return _hex(out["scriptpubkey"], "scriptpubkey"), value
        except (TypeError, KeyError) as exc:
            raise ChainUnavailable(f"tx {txid}: unexpected shape ({exc!r})") from None

    async def is_spent(self, txid: str, index: int) -> bool | None:
        answer = await self._json(f"/tx/{txid}/outspend/{index}")
        if not isinstance(answer, dict) or not isinstance(answer.get("spent"), bool):
            raise ChainUnavailable(f"outspend {txid}:{index}: unexpected shape")
        return bool(answer["spent"])

    async def close(self) -> None:
        await self._http.close()


def rpc_auth(cookie_file: str = "", user: str = "", password_file: str = "") -> str:
    """The Basic authorization header value: from bitcoind's cookie file, or a user and the first
    line of a password file."""
    if cookie_file:
        secret = Path(cookie_file).read_text().strip()
    elif user:
        password = Path(password_file).read_text().splitlines()[0] if password_file else ""
        secret = f"{user}:{password}"
    else:
        return ""
    return "Basic " + base64.b64encode(secret.encode()).decode()


class BitcoindRpc:
    """bitcoind's (or a compatible node's) JSON-RPC at ``url`` (e.g. ``http://127.0.0.1:8332``)."""

    name = "bitcoind"

    def __init__(self, url: str, authorization: str = "", timeout: float = 10.0) -> None:
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        self._http = _Http(url, timeout, headers)
        self._id = 0
        self._with_block_hash = True  # bcoin's getrawtransaction takes no block hash (it needs --index-tx)

    async def call(self, method: str, *params: Any) -> Any:
        """The result of one call; None for bitcoind's "not found" answers (codes -5 and -8)."""
        self._id += 1
        body = json.dumps({"jsonrpc": "1.0", "id": self._id, "method": method, "params": list(params)})
        status, data = await self._http.request("POST", "/", body.encode())
        try:
            answer = json.loads(data, parse_float=Decimal)
        except ValueError:
            raise ChainUnavailable(f"{method}: HTTP {status}, not JSON") from None
        if not isinstance(answer, dict) or "result" not in answer:
            raise ChainUnavailable(f"{method}: HTTP {status}, not a JSON-RPC answer")
        error = answer.get("error")
        if error:
            code = error.get("code") if isinstance(error, dict) else None
            if code in (-5, -8):  # no such block/transaction, height out of range
                return None
            raise RpcError(f"{method}: {error!r:.200}", code)
        if status != 200:
            raise ChainUnavailable(f"{method}: HTTP {status}")
        return answer["result"]

    async def tip_height(self) -> int:
        height = await self.call("getblockcount")
        if not isinstance(height, int) or height < 0:
            raise ChainUnavailable(f"getblockcount: {height!r:.40}")
        return height

    async def block(self, height: int) -> tuple[str, list[str]] | None:
        block_hash = await self.call("getblockhash", height)
        if block_hash is None:
            return None
        block = await self.call("getblock", _txid(block_hash), 1)
        if not isinstance(block, dict) or not isinstance(block.get("tx"), list):
            raise ChainUnavailable(f"getblock {block_hash}: no transaction list")
        return block_hash, [_txid(t) for t in block["tx"]]

    async def output(self, txid: str, block_hash: str, index: int) -> tuple[bytes, int] | None:
        if self._with_block_hash:
            try:
                tx = await self.call("getrawtransaction", txid, True, block_hash)
            except RpcError as exc:
                if exc.code != -1:  # -1: a usage error, the parameter is not understood
                    raise
                self._with_block_hash = False
        if not self._with_block_hash:
            tx = await self.call("getrawtransaction", txid, True)
        if tx is None:
            raise ChainUnavailable(f"getrawtransaction {txid}: not found (a txid its block listed)")
        try:
            vout = tx["vout"]
            if index >= len(vout):
                return None
            out = vout[index]
            return _hex(out["scriptPubKey"]["hex"], "scriptPubKey"), _sats(out["value"])
        except (TypeError, KeyError, ArithmeticError) as exc:
            raise ChainUnavailable(f"getrawtransaction {txid}: unexpected shape ({exc!r})") from None

    async def is_spent(self, txid: str, index: int) -> bool | None:
        # gettxout answers null for an output that is spent (the output is known to exist here).
        return await self.call("gettxout", txid, index, False) is None

    async def close(self) -> None:
        await self._http.close()


def from_settings(chain: Any) -> ChainSource | None:
    """The source ``chain`` (a :class:`lnsync.config.ChainSettings`) configures, or None."""
    if chain.source == "bitcoind":
        auth = rpc_auth(chain.cookie_file, chain.user, chain.password_file)
        return BitcoindRpc(chain.url, auth, chain.timeout)
    if chain.source == "esplora":
        return Esplora(chain.url, chain.timeout)
    return None
