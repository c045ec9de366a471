"""The COMPOUND fast path: the shapes a Linux client sends for one v3-like call, in one function.

Owns ``run_fast``, which ``compound.run_compound`` offers every fresh COMPOUND first.  It
recognises, from the raw arguments, ``[SEQUENCE,] PUTFH, X[, Y]`` with X and Y each one of
GETATTR, READ, WRITE (what Linux sends for v3's GETATTR, READ, WRITE; WRITE is followed by
GETATTR) and runs it without the general loop's per-op dispatch, Unpacker calls and
CompoundState: the same reply bytes and the same state effects as ``compound.run_ops``.

It answers None, having changed nothing, for anything else: a tag, another op or minor
version, arguments the general path would refuse (truncated, too long, a bad boolean or
stable_how4), a handle that does not verify or a pseudo-fs one, a scope that fails (ACCESS,
STALE, an export not open yet), a directory, a read-only export for WRITE, the 4.1 "current
stateid", a reply that might not fit, and a SEQUENCE that is not "live session, slot in range,
seqid + 1" (retries, misordered seqids, errors).  Those run in the general loop from the start.
After SEQUENCE has taken the slot, an op that fails answers its status as its handler would,
and a backend call that would wait (``WouldBlock``) parks the COMPOUND as the loop would have it at
that op, for ``compound.run_ops`` to resume in the thread pool.  Sans-IO.
"""

from __future__ import annotations

import struct
import zlib

from acmenfs.fs.nonblocking import WouldBlock
from acmenfs.nfs4.attrs import encode_fattr_for_words
from acmenfs.nfs4.compound import _HEAD, CompoundState, _gather, _Run, _status_of_exception, finish
from acmenfs.nfs4.const import FILE_SYNC4, MAX_IO, MAX_REPLY, NFS4_FHSIZE, Op
from acmenfs.nfs4.errors import Nfs4Error, status_for
from acmenfs.nfs4.ops_attr import export_source_of
from acmenfs.nfs4.ops_io import MAX_OFFSET
from acmenfs.nfs4.xdr4 import CURRENT_STATEID, FALSE, MAX_BITMAP_WORDS, TRUE, U32
from acmenfs.oncrpc.read_parts import read_parts

_HEADER = struct.Struct(">III")            # tag length (must be 0), minorversion, numops
_SEQUENCE = struct.Struct(">I16sIIII")     # opnum, sessionid, seqid, slotid, highest_slotid, cachethis
# SEQUENCE's result (opnum, OK, sessionid, seqid, slotid, highest, target, status flags), then PUTFH's
_SEQUENCE_PUTFH_RES = struct.Struct(">II16sIIIIIII")
_OPNUM_LENGTH = struct.Struct(">II")       # opnum, then a length (PUTFH's opaque, GETATTR's bitmap)
_READ = struct.Struct(">I16sQI")           # opnum, stateid, offset, count
_WRITE = struct.Struct(">I16sQII")         # opnum, stateid, offset, stable, data length
_WORDS = [struct.Struct(f">{count}I") for count in range(MAX_BITMAP_WORDS + 1)]
# Room kept under the reply limit beyond READ's data: the fast path runs only when it fits.
_REPLY_MARGIN = 16 * 1024
# Bound on a fast-shaped reply without READ data (SEQUENCE, PUTFH, WRITE and a GETATTR of every
# attribute with a 128-byte handle: under 700 bytes), checked against ca_maxresponsesize_cached.
_CACHED_REPLY_BOUND = 1024
_GETATTR, _READ_OP, _WRITE_OP, _PUTFH, _SEQUENCE_OP = Op.GETATTR, Op.READ, Op.WRITE, Op.PUTFH, Op.SEQUENCE
_NAMES = {_GETATTR: "GETATTR", _READ_OP: "READ", _WRITE_OP: "WRITE"}
_RES_HEAD = struct.Struct(">III")          # status, empty tag, result count
_PUTFH_OK = _HEAD.pack(_PUTFH, 0)


def parse(view, offset: int, end: int):
    """(minor, SEQUENCE args or None, offset of PUTFH, ``parse_tail``'s answer) of a COMPOUND of
    a fast shape; None for any other."""
    if offset + 12 > end:
        return None
    tag_length, minor, numops = _HEADER.unpack_from(view, offset)
    if tag_length or minor > 2:
        return None
    position = offset + 12
    sequence = None
    if minor:
        if position + 36 > end:
            return None
        sequence = _SEQUENCE.unpack_from(view, position)
        if sequence[0] != _SEQUENCE_OP or sequence[5] > 1:
            return None
        position += 36
        numops -= 1
    if not 2 <= numops <= 3:
        return None
    length = end - position
    if length > _REMEMBERED_TAIL:
        tail = parse_tail(view[position:end], minor, numops)
    elif length >= 44 and _U32_AT(view, end - 32)[0] == _READ_OP:
        # ends like a READ (PUTFH + READ): remembered without READ's offset and count, which a
        # client's random reads change on every call; the same bytes before them parse the same
        key = (minor, numops, bytes(view[position:end - 12]))
        head = _READ_TAILS.get(key)
        if head is None:   # (or not a READ at the end after all: a handle's bytes looked like one)
            tail = _remembered(view, position, end, minor, numops, store=False)
            if tail and not tail[3]:   # WRITE keeps a view of its data: never remembered
                last = tail[1][-1]
                if last[0] == _READ_OP and last[1] == length - 32:
                    if len(_READ_TAILS) >= 4096:
                        _READ_TAILS.clear()
                    _READ_TAILS[key] = (tail[0], tail[1][:-1], tail[2] - min(last[4], MAX_IO), last[2])
                else:
                    _remembered(view, position, end, minor, numops, store=True)
        else:
            raw, ops, reading, stateid = head
            read_offset, count = _OFFSET_COUNT.unpack_from(view, end - 12)
            tail = (raw, ops + ((_READ_OP, length - 32, stateid, read_offset, count, length),),
                    reading + min(count, MAX_IO), False, True)
    else:   # a client repeats the same PUTFH + GETATTR: parsed once
        tail = _remembered(view, position, end, minor, numops, store=True)
    return (minor, sequence, position, tail) if tail else None


def _remembered(view, position: int, end: int, minor: int, numops: int, store: bool):
    """``parse_tail`` of the ops from ``position``, remembered by their bytes (``store``: kept
    when parsed now, unless they hold a WRITE, which keeps a view of its data)."""
    key = (minor, numops, bytes(view[position:end]))
    tail = _TAILS.get(key)
    if tail is None:
        tail = parse_tail(memoryview(key[2]), minor, numops)
        if store and tail and not tail[3]:
            if len(_TAILS) >= 4096:
                _TAILS.clear()
            _TAILS[key] = tail
    return tail


_REMEMBERED_TAIL = 256
_TAILS: dict[tuple, tuple] = {}
_READ_TAILS: dict[tuple, tuple] = {}   # tail but READ's offset and count -> parse_tail's answer without READ
_U32_AT = U32.unpack_from
_OFFSET_COUNT = struct.Struct(">QI")


def parse_tail(view, minor: int, numops: int):
    """(PUTFH's handle, the ops after it, READ bytes asked for, whether WRITE is among them,
    whether READ or WRITE is) of the ops from PUTFH on (``view`` starts there); None if they are
    not a fast shape.  Each op is (opnum, offset in ``view``, *its args, offset of the next op)."""
    end = len(view)
    if end < 8:
        return None
    opnum, length = _OPNUM_LENGTH.unpack_from(view, 0)
    padded = (length + 3) & ~3
    if opnum != _PUTFH or not 0 < length <= NFS4_FHSIZE or 8 + padded > end:
        return None
    raw = bytes(view[8:8 + length])
    position = 8 + padded
    ops = []
    reading, writing, io = 0, False, False
    for _ in range(numops - 1):
        op = _parse_op(view, position, end, minor)
        if op is None:
            return None
        ops.append(op)
        position = op[-1]
        if op[0] != _GETATTR:
            io = True
            if op[0] == _READ_OP:
                reading += min(op[4], MAX_IO)
            else:
                writing = True
    return raw, tuple(ops), reading, writing, io


def _parse_op(view, position: int, end: int, minor: int):
    """(opnum, offset, args..., offset of the next op) of GETATTR, READ or WRITE, else None."""
    if position + 8 > end:
        return None
    opnum, length = _OPNUM_LENGTH.unpack_from(view, position)
    if opnum == _GETATTR:
        following = position + 8 + 4 * length
        if length > MAX_BITMAP_WORDS or following > end:
            return None
        return opnum, position, _WORDS[length].unpack_from(view, position + 8), following
    if opnum == _READ_OP:
        if position + 32 > end:
            return None
        _, stateid, offset, count = _READ.unpack_from(view, position)
        if minor and stateid == CURRENT_STATEID:
            return None
        return opnum, position, stateid, offset, count, position + 32
    if opnum == _WRITE_OP:
        if position + 36 > end:
            return None
        _, stateid, offset, stable, length = _WRITE.unpack_from(view, position)
        following = position + 36 + ((length + 3) & ~3)
        if (following > end or stable > FILE_SYNC4 or offset + length > MAX_OFFSET
                or (minor and stateid == CURRENT_STATEID)):
            return None
        return opnum, position, stateid, offset, stable, view[position + 36:position + 36 + length], following
    return None


def run_fast(server, ctx, args, _ops, inline: bool):
    """The reply of a fast-shaped COMPOUND, or None (nothing changed) for the general loop.
    (``_ops``, the op registry ``run_compound`` passes, is not needed: the shapes are fixed.)"""
    parsed = parse(args.view, args.offset, args.end)
    if parsed is None:
        return None
    minor, sequence, tail, (raw, ops, reading, _, io) = parsed
    fh = server.fh._known.get(raw)
    if fh is None:
        try:
            fh = server.fh.decode(raw)   # verifies and remembers it, as PUTFH would
        except Exception:  # noqa: BLE001 - BADHANDLE: the general path answers it
            return None
    if fh.is_pseudo:
        return None
    try:
        scope = server.nfs.scope(ctx, raw)
    except Exception:  # noqa: BLE001 - every failure (and WouldBlock) is the general path's to answer
        return None
    if io:
        node = scope.node
        if node.is_dir or not node.is_reg:
            return None
        for op in ops:
            if op[0] == _WRITE_OP and not scope.writable:
                return None
    if sequence is None:
        if reading + _REPLY_MARGIN > MAX_REPLY:
            return None
        slot, cachethis = None, True
        results = [_PUTFH_OK]
        count = 1
    else:
        _, sessionid, seqid, slotid, _, cachethis = sequence
        sessions = getattr(server.state, "sessions", None)   # a state manager without sessions: general path
        session = sessions.by_id.get(sessionid) if sessions is not None else None
        if session is None or reading + _REPLY_MARGIN > (min(session.fore.maxresponsesize, MAX_REPLY) or MAX_REPLY):
            return None
        # The session's other limits (SEQUENCE's TOO_MANY_OPS / REQ_TOO_BIG, run_ops's
        # REP_TOO_BIG_TO_CACHE) are the general path's to answer; the ops are SEQUENCE, PUTFH and
        # ``ops``, and a non-READ reply of these shapes stays under _CACHED_REPLY_BOUND.
        if (session.refusal(len(ops) + 2, args.end) is not None
                or (cachethis and reading + _CACHED_REPLY_BOUND > session.fore.maxresponsesize_cached)):
            return None
        digest = zlib.crc32(args.view[args.offset + 12:args.end])   # as op_sequence: SEQUENCE and the rest
        slot = sessions.next_in_slot(sessionid, seqid, slotid, digest)
        if slot is None:
            return None
        top = len(slot.session.slots) - 1
        results = [_SEQUENCE_PUTFH_RES.pack(_SEQUENCE_OP, 0, sessionid, seqid, slotid, top, top, 0, _PUTFH, 0)]
        count = 2
        cachethis = cachethis == 1
    nonidempotent = False
    status = 0
    plain = True
    data_at = -1
    for op in ops:
        opnum = op[0]
        if opnum == _WRITE_OP:
            nonidempotent = True
        try:
            body = _run_op(server, minor, fh, scope, op, inline)
        except WouldBlock:
            _hand_over(server, ctx, minor, fh, scope, slot, cachethis, nonidempotent, results, tail + op[1], count,
                       _HEADER.unpack_from(args.view, args.offset)[2], inline)
            raise
        except Exception as exc:  # noqa: BLE001 - as the general loop: this op's nfsstat4
            status, body = _status_of_exception(exc, _NAMES[opnum])
        if type(body) is bytes:
            results.append(_HEAD.pack(opnum, status) + body)
        elif plain and len(body) == 2 and type(body[1]) is not bytes:   # READ's header, then its data
            plain = False
            results.append(_HEAD.pack(opnum, status) + body[0])
            results.append(body[1])
            data_at = len(results) - 1
        else:
            plain = False
            data_at = -1
            results.append(_HEAD.pack(opnum, status))
            results.extend(body)
        count += 1
        if status:
            break
    head = _RES_HEAD.pack(status, 0, count)
    if plain:
        reply = [head + b"".join(results)]
    elif data_at == len(results) - 1:   # _gather's answer when only the last part is not bytes
        reply = [head + b"".join(results[:-1]), results[-1]]
    else:
        reply = _gather(head, results)
    return finish(server, ctx, slot, cachethis, nonidempotent, reply)


def _run_op(server, minor: int, fh, scope, op, inline: bool):
    """One GETATTR, READ or WRITE on the PUTFH's scope: its result body; Nfs4Error on failure."""
    opnum = op[0]
    backend, node = scope.backend, scope.node
    if opnum == _GETATTR:
        try:
            st = backend.stat(node)
        except Exception as exc:  # noqa: BLE001
            raise Nfs4Error(status_for(exc), str(exc)) from exc
        return encode_fattr_for_words(op[2], export_source_of(server, minor, scope, fh.raw, st))
    write = opnum == _WRITE_OP
    state = server.state
    key = (fh.export_id, fh.backend_handle)
    if not state.check_io_fast(op[2], key, write):   # a live stateid of this file, as clients send
        state.check_io(op[2], key, write)
    if write:
        data = op[5]
        try:
            backend.write(node, scope.who, op[3], data, op[4])
        except Exception as exc:  # noqa: BLE001
            raise Nfs4Error(status_for(exc), str(exc)) from exc
        server.count_written(len(data))
        return U32.pack(len(data)) + U32.pack(op[4]) + server.nfs.committer.verifier
    offset = op[3]
    try:
        data, count, eof, _ = backend.read(node, scope.who, offset, min(op[4], MAX_IO))
        parts, count, eof = read_parts(backend, data, offset, count, eof, inline)
    except Exception as exc:  # noqa: BLE001
        raise Nfs4Error(status_for(exc), str(exc)) from exc
    parts.insert(0, (TRUE if eof else FALSE) + U32.pack(count))
    server.count_read(count)
    return parts


def _hand_over(server, ctx, minor, fh, scope, slot, cachethis, nonidempotent, results, offset, count,
               numops, inline):
    """A backend call would wait (WouldBlock): park the COMPOUND as the general loop would hold it
    at this op (``run_ops`` resumes it there in the thread pool) and let WouldBlock go on."""
    if inline:
        cs = CompoundState(server, ctx, minor)
        cs.current_fh = fh
        cs._last_scope = (fh, scope)
        cs.nonidempotent = nonidempotent
        cs.op_count = numops
        if slot is not None:
            cs.session, cs.slot, cs.clientid = slot.session, slot, slot.session.client.clientid
            cs.cachethis = cachethis
        run = _Run(cs, b"", numops)
        run.index, run.offset, run.count = count, offset, count
        run.size = sum(len(part) for part in results)   # the loop's size: 8 + body per result
        run.results = results
        server.park(ctx, run)

