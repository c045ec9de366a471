"""Audit of issue #13, the 4.1 COMPOUND limits a session negotiates (RFC 8881 §2.10.6.4 and
§18.36.3): a reply beyond ca_maxresponsesize is REP_TOO_BIG, more ops than ca_maxoperations is
TOO_MANY_OPS, a request beyond ca_maxrequestsize is REQ_TOO_BIG, a reply the client asked to
cache beyond ca_maxresponsesize_cached is REP_TOO_BIG_TO_CACHE.  Sans-IO through the real
dispatcher (``Sans4``), each test with a session whose fore channel it chose."""

from __future__ import annotations


from acmenfs.nfs4.client import U64, ZERO_STATEID, Nfs4Client, Ops, compound_args, parse_compound, u32
from acmenfs.nfs4.const import Nfs4Stat as S

MIB = 1 << 20


def session(v4, *, maxrequest=MIB, maxresponse=MIB, maxcached=64 * 1024, maxops=16) -> Nfs4Client:
    """A 4.1 client with a session whose fore channel asks for these limits."""
    client = Nfs4Client(lambda args: v4.body(args), 1)
    exid = client.raw([Ops.exchange_id(client.verifier, client.owner)]).last.value
    client.clientid = exid["clientid"]
    fore = u32(0, maxrequest, maxresponse, maxcached, maxops, 8, 0)
    back = u32(0, 4096, 4096, 0, 2, 1, 0)
    create = (u32(43) + U64.pack(client.clientid) + u32(exid["sequenceid"], 0) + fore + back
              + u32(0x40000000) + u32(1, 0))
    reply = client.raw([create])
    assert reply.status == S.OK
    granted = reply.last.value["fore"]             # headerpad, maxreq, maxresp, maxcached, maxops, maxreqs
    assert granted[1] <= maxrequest and granted[2] <= maxresponse and granted[3] <= maxcached
    assert granted[4] <= maxops
    client.sessionid = reply.last.value["sessionid"]
    client.call(Ops.reclaim_complete())
    return client


def send(client: Nfs4Client, ops: list[bytes], cache: bool = False):
    client.slot_seqid += 1
    args = compound_args([Ops.sequence(client.sessionid, client.slot_seqid, cache=cache), *ops], 1)
    return parse_compound(client.send(args))


def test_reply_beyond_ca_maxresponsesize_is_rep_too_big(v4, export_dir):
    (export_dir / "big").write_bytes(b"b" * 8192)
    c = session(v4, maxresponse=1024)
    reply = send(c, [*c.lookup_ops("/e/big"), Ops.read(ZERO_STATEID, 0, 4000)])
    assert reply.status == S.REP_TOO_BIG and reply.last.op == 25
    reply = send(c, [*c.lookup_ops("/e/big"), Ops.read(ZERO_STATEID, 0, 100)])
    assert reply.status == S.OK and reply.last.value[1] == b"b" * 100   # the session goes on


def test_more_ops_than_ca_maxoperations_is_too_many_ops_and_runs_nothing(v4, export_dir):
    (export_dir / "victim").write_text("x")
    c = session(v4, maxops=4)
    reply = send(c, [*c.lookup_ops("/e"), Ops.remove("victim"), Ops.putrootfh(), Ops.putrootfh()])   # 6 ops
    assert reply.status == S.TOO_MANY_OPS and [r.op for r in reply.results] == [53]
    assert (export_dir / "victim").exists()
    c.slot_seqid -= 1                                   # the slot was not used: its seqid is free
    reply = send(c, [*c.lookup_ops("/e"), Ops.remove("victim")])                                      # 4 ops
    assert reply.status == S.OK and not (export_dir / "victim").exists()


def test_request_beyond_ca_maxrequestsize_is_req_too_big_and_runs_nothing(v4, export_dir):
    c = session(v4, maxrequest=2048)
    fh, sid = c.open("/e/w", create="unchecked")
    reply = send(c, [*c.lookup_ops("/e/w"), Ops.write(sid, 0, b"w" * 4000)])
    assert reply.status == S.REQ_TOO_BIG and [r.op for r in reply.results] == [53]
    assert (export_dir / "w").stat().st_size == 0
    c.slot_seqid -= 1
    reply = send(c, [*c.lookup_ops("/e/w"), Ops.write(sid, 0, b"w" * 1000)])
    assert reply.status == S.OK and (export_dir / "w").stat().st_size == 1000


def test_a_linux_shaped_write_beyond_ca_maxrequestsize_is_req_too_big_too(v4, export_dir):
    c = session(v4, maxrequest=2048)
    fh, sid = c.open("/e/w", create="unchecked")
    reply = send(c, [Ops.putfh(fh), Ops.write(sid, 0, b"w" * 4000)])
    assert reply.status == S.REQ_TOO_BIG
    assert (export_dir / "w").stat().st_size == 0


def test_cached_reply_beyond_ca_maxresponsesize_cached_is_rep_too_big_to_cache(v4, export_dir):
    (export_dir / "big").write_bytes(b"b" * 8192)
    c = session(v4, maxcached=512)
    reply = send(c, [*c.lookup_ops("/e/big"), Ops.read(ZERO_STATEID, 0, 2000)], cache=True)
    assert reply.status == S.REP_TOO_BIG_TO_CACHE
    reply = send(c, [*c.lookup_ops("/e/big"), Ops.read(ZERO_STATEID, 0, 2000)], cache=False)
    assert reply.status == S.OK                    # the same reply, not to be cached, is fine


def test_a_linux_cached_write_stays_on_the_fast_path(v4, export_dir):
    """Linux asks for a ca_maxresponsesize_cached of about an OPEN reply (1.5-2 KiB) and sets
    sa_cachethis on WRITE: its SEQUENCE + PUTFH + WRITE + GETATTR must still take the fast path
    (the cached-reply check must not send every cached WRITE to the general loop)."""
    c = session(v4, maxcached=1800)
    fh, sid = c.open("/e/linux", create="unchecked")
    answered = []
    fast = v4.nfs4.fast_path
    v4.nfs4.fast_path = lambda *args: answered.append(fast(*args)) or answered[-1]
    reply = send(c, [Ops.putfh(fh), Ops.write(sid, 0, b"l" * 4096, stable=0), Ops.getattr(1, 3, 4)], cache=True)
    assert reply.status == S.OK
    assert answered and answered[-1] is not None
    assert (export_dir / "linux").read_bytes() == b"l" * 4096
