/* acmenfs.nfs3._writeaccel -- the NFSv3 UNSTABLE WRITE of a granted (handle, client, credential), in C.
 *
 * Owns ``WriteGrants``: a table of grants, each made by the Python fast path
 * (acmenfs/nfs3/fastpath.py, ``FastPath._write``) after it answered an UNSTABLE WRITE itself: the
 * call's file handle, client address and raw credential, with what that WRITE resolved (the node,
 * which keeps its read-write descriptor open, the squashed identity, the export's fsid and root
 * device, its backend's usage counter and inline-write pause) and the export-table generation it
 * was resolved under.  ``answer(record, client)`` answers a later UNSTABLE WRITE with the same
 * handle, client address and credential as ``FastPath._write`` would, or returns None having
 * changed nothing, and the Python path then runs the call from the start.
 *
 * Python stays the authority: a grant only repeats a decision Python made, and is not used once
 * the export table has changed.  Per call this code still takes the steps Python takes per call,
 * in the order Python takes them (local_data.py ``LocalDataMixin.write``, fastpath.py ``_write``):
 *   - fstat: a regular file, not deleted (a deleted file's grant is forgotten), writable by the
 *     caller (mode bits, owner may always write), without set-id bits (Python clears them);
 *   - the export's inline writes not paused (``InlinePause.paused_until``); voluntary context
 *     switches counted while it watches (``watch_until``), ``finish`` called after a slow write;
 *   - a quota: only an overwrite inside a file allocated in full (it charges nothing), else None;
 *   - the duplicate request cache: ``drc.check`` with the key ``make_request_key`` builds (CRC-32
 *     of the first 256 argument bytes); a retransmission is answered by ``duplicate``
 *     (FastPath._duplicate); ``drc.done`` with the reply, ``drc.drop`` when the write fails;
 *   - pwrite, then ``committer.mark_dirty(node, offset, length)`` (COMMIT makes it durable),
 *     fstat, ``usage.add`` of what the write allocated;
 *   - the reply: NFS3_OK, wcc_data (pre size and times, post fattr3), count, UNSTABLE, the
 *     committer's current verifier.
 * Only page-aligned writes of 1..65536 bytes (a partial page may need a disk read, which Python
 * checks for) with count equal to the data's length; anything else is None.  Counts calls, bytes
 * and seconds for the server's stats.  The GIL is held through the pwrite, as for the READ: a
 * page-cache write takes microseconds, and a write that blocks pauses inline writes as in Python.
 */
#include "_accel.h"

#include <errno.h>
#include <sys/resource.h>
#include <unistd.h>

#define NFSPROC3_WRITE 7u
#define MAX_INLINE_WRITE 65536u
#define CHECKSUM_PREFIX_BYTES 256 /* acmenfs/oncrpc/drc.py */
#define QUOTA_BLOCK 4096u         /* acmenfs/fs/quota.py BLOCK */
#define REPLY_BYTES (SUCCESS_HEAD + 4 + 28 + 4 + FATTR3_BYTES + 16)

typedef struct {
    GrantCore core;    /* fd: the node's read-write descriptor, open while the grant holds the node */
    PyObject *node, *usage, *pause, *directory;
} Grant;

typedef struct {
    GRANT_TABLE_HEAD      /* grants: key bytes -> capsule(Grant) */
    PyObject *committer;  /* the state's GroupCommitter: mark_dirty, verifier */
    PyObject *drc, *duplicate, *new_status;
    double blocked_seconds;
    uintptr_t page_mask;
} WriteGrants;

static const char GRANT_NAME[] = "acmenfs.nfs3._writeaccel.Grant";
static PyObject *s_check, *s_done, *s_drop, *s_mark_dirty, *s_add, *s_finish, *s_paused_until,
    *s_watch_until, *s_quota_bytes, *s_verifier;
static PyObject *route[3];  /* NFS_PROGRAM, NFS_V3, NFSPROC3_WRITE as ints: the start of a DRC fingerprint */
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* zlib.crc32 (CRC-32/ISO-HDLC) of ``size`` bytes. */
static uint32_t crc32_of(const unsigned char *p, Py_ssize_t size) {
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < size; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void grant_release(void *pointer) {
    Grant *grant = pointer;
    Py_XDECREF(grant->node);
    Py_XDECREF(grant->usage);
    Py_XDECREF(grant->pause);
    Py_XDECREF(grant->directory);
    PyMem_Free(grant);
}

static void grant_free(PyObject *capsule) {
    Grant *grant = PyCapsule_GetPointer(capsule, GRANT_NAME);
    if (grant != NULL)
        grant_release(grant);
}

/* A WRITE call: offset, count, stable and the data; 0, or -1 when ``record`` is not one. */
typedef struct {
    uint64_t offset;
    uint32_t count, stable, length;
    const unsigned char *data;
} WriteArgs;

static int parse_write(const unsigned char *r, Py_ssize_t size, NfsCall *call, WriteArgs *args) {
    if (parse_call(r, size, NFSPROC3_WRITE, 20, call) < 0)
        return -1;
    const unsigned char *p = r + call->args;
    args->offset = get64(p);
    args->count = get32(p + 8);
    args->stable = get32(p + 12);
    args->length = get32(p + 16);
    Py_ssize_t start = call->args + 20;
    if ((Py_ssize_t)args->length > size - start - (Py_ssize_t)(-args->length & 3))
        return -1;
    args->data = r + start;
    return 0;
}

/* What an object counts against the quota (acmenfs/fs/quota.py charged_bytes, regular file). */
static int64_t charged(const struct stat *st) {
    int64_t allocated = (int64_t)st->st_blocks * 512;
    int64_t whole = ((int64_t)st->st_size + QUOTA_BLOCK - 1) / QUOTA_BLOCK * QUOTA_BLOCK;
    return allocated < whole ? allocated : whole;
}

/* A float attribute (a pause's time); 0, or -1 with an exception set. */
static int float_attr(PyObject *object, PyObject *name, double *value) {
    PyObject *v = PyObject_GetAttr(object, name);
    if (v == NULL)
        return -1;
    *value = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return *value == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* May a write of [offset, end) go ahead under the export's quota without measuring: no quota,
 * or an overwrite inside a file allocated in full.  1 yes, 0 no, -1 with an exception set. */
static int quota_allows(const Grant *grant, const struct stat *st, uint64_t end) {
    PyObject *quota = PyObject_GetAttr(grant->usage, s_quota_bytes);
    if (quota == NULL)
        return -1;
    int none = quota == Py_None;
    Py_DECREF(quota);
    if (none)
        return 1;
    return end <= (uint64_t)st->st_size && charged(st) == (((int64_t)st->st_size + QUOTA_BLOCK - 1) / QUOTA_BLOCK * QUOTA_BLOCK);
}

/* NFS3_OK, wcc_data, count, UNSTABLE, verifier after the RPC success header: REPLY_BYTES. */
static void put_reply(unsigned char *p, uint32_t xid, const Grant *grant, const struct stat *pre,
                      const struct stat *post, uint32_t count, const char *verifier) {
    p = put_success(p, xid);
    p = put32(p, 1);   /* pre_op_attr: size, mtime, ctime */
    p = put64(p, (uint64_t)pre->st_size);
    p = put_time(p, &pre->st_mtim);
    p = put_time(p, &pre->st_ctim);
    p = put32(p, 1);   /* post_op_attr */
    p = put_fattr3(p, post, grant->core.fsid, grant->core.root_dev);
    p = put32(p, count);
    p = put32(p, 0);   /* UNSTABLE */
    memcpy(p, verifier, 8);
}

/* The DRC's key of this call: ((xid, client), (prog, vers, proc, argument length, checksum)). */
static PyObject *request_key(const unsigned char *r, Py_ssize_t size, const NfsCall *call, PyObject *client) {
    Py_ssize_t length = size - call->at;
    Py_ssize_t prefix = length < CHECKSUM_PREFIX_BYTES ? length : CHECKSUM_PREFIX_BYTES;
    PyObject *identity = PyTuple_New(2), *fingerprint = PyTuple_New(5), *key = PyTuple_New(2);
    if (identity == NULL || fingerprint == NULL || key == NULL) {
        Py_XDECREF(identity);
        Py_XDECREF(fingerprint);
        Py_XDECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 0, identity);
    PyTuple_SET_ITEM(key, 1, fingerprint);
    Py_INCREF(client);
    PyTuple_SET_ITEM(identity, 0, PyLong_FromUnsignedLong(call->xid));
    PyTuple_SET_ITEM(identity, 1, client);
    for (int i = 0; i < 3; i++) {
        Py_INCREF(route[i]);
        PyTuple_SET_ITEM(fingerprint, i, route[i]);
    }
    PyTuple_SET_ITEM(fingerprint, 3, PyLong_FromSsize_t(length));
    PyTuple_SET_ITEM(fingerprint, 4, PyLong_FromUnsignedLong(crc32_of(r + call->at, prefix)));
    if (PyTuple_GET_ITEM(identity, 0) == NULL || PyTuple_GET_ITEM(fingerprint, 3) == NULL
        || PyTuple_GET_ITEM(fingerprint, 4) == NULL) {
        Py_DECREF(key);  /* (frees what was made; a NULL item is skipped) */
        return NULL;
    }
    return key;
}

static PyObject *call_method(PyObject *object, PyObject *name, PyObject *a, PyObject *b, PyObject *c) {
    PyObject *args[4] = {object, a, b, c};
    size_t n = 1 + (a != NULL) + (b != NULL) + (c != NULL);
    return PyObject_VectorcallMethod(name, args, n | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* Tell the DRC the call failed (its reply must not be replayed); keeps any pending exception out. */
static void drop_token(WriteGrants *self, PyObject *token) {
    PyObject *result = call_method(self->drc, s_drop, token, NULL, NULL);
    Py_XDECREF(result);
    PyErr_Clear();
}

/* Everything after the checks: the DRC, the write, its bookkeeping and the reply.  Returns the reply
 * parts ([reply], or what ``duplicate`` answers), or None when Python must run the call. */
static PyObject *write_granted(WriteGrants *self, Grant *grant, const unsigned char *r, Py_ssize_t size,
                               const NfsCall *call, const WriteArgs *args, PyObject *client,
                               const struct stat *pre, double begun, long voluntary) {
    PyObject *key = request_key(r, size, call, client);
    if (key == NULL)
        return NULL;
    PyObject *found = call_method(self->drc, s_check, key, NULL, NULL);
    Py_DECREF(key);
    if (found == NULL)
        return NULL;
    if (!PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 2) {
        Py_DECREF(found);
        PyErr_SetString(PyExc_TypeError, "drc.check returned no (status, token)");
        return NULL;
    }
    PyObject *status = PyTuple_GET_ITEM(found, 0), *token = PyTuple_GET_ITEM(found, 1);
    if (status != self->new_status) {  /* a retransmission: the cached reply, or nothing */
        PyObject *parts = PyObject_CallFunctionObjArgs(self->duplicate, status, token, NULL);
        Py_DECREF(found);
        return parts;
    }
    Py_INCREF(token);
    Py_DECREF(found);
    PyObject *reply = NULL, *parts = NULL, *result;
    uint32_t done = 0;
    while (done < args->length) {
        ssize_t n = pwrite(grant->core.fd, args->data + done, args->length - done, (off_t)(args->offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto python;  /* an error or ENOSPC: the general path runs it and answers the error */
        done += (uint32_t)n;
    }
    PyObject *offset = PyLong_FromUnsignedLongLong(args->offset), *length = PyLong_FromUnsignedLong(args->length);
    result = offset && length ? call_method(self->committer, s_mark_dirty, grant->node, offset, length) : NULL;
    Py_XDECREF(offset);
    Py_XDECREF(length);
    if (result == NULL)
        goto python;
    Py_DECREF(result);
    struct stat post;
    if (fstat(grant->core.fd, &post) < 0)
        goto python;
    int64_t delta = post.st_blocks != pre->st_blocks || post.st_size != pre->st_size ? charged(&post) - charged(pre) : 0;
    if (delta != 0) {
        PyObject *value = PyLong_FromLongLong(delta);
        result = value ? call_method(grant->usage, s_add, value, NULL, NULL) : NULL;
        Py_XDECREF(value);
        if (result == NULL)
            goto python;
        Py_DECREF(result);
    }
    if (now_seconds() - begun > self->blocked_seconds) {  /* slept in the kernel? (InlinePause.finish) */
        PyObject *started = Py_BuildValue("(dl)", begun, voluntary);
        result = started ? call_method(grant->pause, s_finish, started, grant->directory, NULL) : NULL;
        Py_XDECREF(started);
        if (result == NULL)
            goto python;
        Py_DECREF(result);
    }
    PyObject *verifier = PyObject_GetAttr(self->committer, s_verifier);
    if (verifier == NULL)
        goto python;
    if (!PyBytes_Check(verifier) || PyBytes_GET_SIZE(verifier) != 8) {
        Py_DECREF(verifier);
        goto python;
    }
    reply = PyBytes_FromStringAndSize(NULL, REPLY_BYTES);
    if (reply != NULL)
        put_reply((unsigned char *)PyBytes_AS_STRING(reply), call->xid, grant, pre, &post, args->length,
                  PyBytes_AS_STRING(verifier));
    Py_DECREF(verifier);
    if (reply == NULL)
        goto python;
    result = call_method(self->drc, s_done, token, reply, NULL);
    Py_DECREF(token);
    if (result == NULL) {  /* as in FastPath._write: the general path runs it (and finds it in the DRC) */
        Py_DECREF(reply);
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_DECREF(result);
    parts = PyList_New(1);
    if (parts == NULL) {
        Py_DECREF(reply);
        return NULL;
    }
    PyList_SET_ITEM(parts, 0, reply);
    self->calls += 1;
    self->bytes += args->length;
    return parts;
python:
    PyErr_Clear();
    Py_XDECREF(reply);
    drop_token(self, token);
    Py_DECREF(token);
    Py_RETURN_NONE;
}

static PyObject *WriteGrants_answer(WriteGrants *self, PyObject *const *argv, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_Check(argv[1]) || PyTuple_GET_SIZE(argv[1]) < 1
        || !PyUnicode_Check(PyTuple_GET_ITEM(argv[1], 0))) {
        PyErr_SetString(PyExc_TypeError, "answer(record, client: (address, port))");
        return NULL;
    }
    double started = now_seconds();
    Py_buffer view;
    if (PyObject_GetBuffer(argv[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *key = NULL, *capsule = NULL, *parts = NULL;
    const unsigned char *r = view.buf;
    NfsCall call;
    WriteArgs args;
    if (parse_write(r, view.len, &call, &args) < 0)
        goto out;
    uint64_t end = args.offset + args.length;
    if (args.stable != 0 || args.count != args.length || args.length == 0 || args.length > MAX_INLINE_WRITE
        || args.offset > (uint64_t)INT64_MAX - MAX_INLINE_WRITE || ((args.offset | end) & self->page_mask))
        goto out;
    Grant *grant = (Grant *)find_grant((GrantTable *)self, PyTuple_GET_ITEM(argv[1], 0), &call, GRANT_NAME,
                                       &key, &capsule);
    if (grant == NULL)
        goto out;
    struct stat pre;
    if (fstat(grant->core.fd, &pre) < 0 || !S_ISREG(pre.st_mode))
        goto out;
    if (pre.st_nlink == 0) {  /* deleted: Python answers STALE */
        forget_grant((GrantTable *)self, key);
        goto out;
    }
    if (!may_access(&grant->core.who, &pre, 2) || (pre.st_mode & (S_ISUID | S_ISGID)))
        goto out;
    double paused_until, watch_until, now = now_seconds();
    if (float_attr(grant->pause, s_paused_until, &paused_until) < 0
        || float_attr(grant->pause, s_watch_until, &watch_until) < 0 || now < paused_until)
        goto out;  /* (paused: Python sends it to the thread pool) */
    int allowed = quota_allows(grant, &pre, end);
    if (allowed <= 0)
        goto out;
    long voluntary = -1;
    if (now < watch_until) {
        struct rusage usage;
        if (getrusage(RUSAGE_THREAD, &usage) == 0)
            voluntary = usage.ru_nvcsw;
    }
    unsigned long long answered = self->calls;
    parts = write_granted(self, grant, r, view.len, &call, &args, argv[1], &pre, now, voluntary);
    if (self->calls != answered)  /* (not a retransmission's answer) */
        self->seconds += now_seconds() - started;
out:  /* the reply parts; NULL: None, or an error (exception set) */
    Py_XDECREF(key);
    Py_XDECREF(capsule);
    PyBuffer_Release(&view);
    if (parts != NULL || PyErr_Occurred())
        return parts;
    Py_RETURN_NONE;
}

static PyObject *WriteGrants_grant(WriteGrants *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"record", "address", "node", "fd", "uid", "gid", "gids", "fsid", "root_dev",
                            "generation", "backend", NULL};
    Py_buffer view;
    PyObject *address, *node, *gids, *backend;
    int fd;
    unsigned int uid, gid;
    unsigned long long fsid, root_dev;
    long long generation;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*UOiIIO!KKLO", names, &view, &address, &node, &fd, &uid,
                                     &gid, &PyTuple_Type, &gids, &fsid, &root_dev, &generation, &backend))
        return NULL;
    NfsCall call;
    WriteArgs write;
    PyObject *key = NULL;
    Grant *grant = NULL;
    if (parse_write(view.buf, view.len, &call, &write) < 0) {
        PyErr_SetString(PyExc_ValueError, "not an NFSv3 WRITE call");
        goto done;
    }
    key = make_key(address, &call);
    Grant *held = key == NULL ? NULL : (Grant *)kept_grant((GrantTable *)self, key, GRANT_NAME);
    if (PyErr_Occurred()
        || (held != NULL && held->core.generation == generation && held->node == node && held->core.fd == fd))
        goto done;  /* (granted already: a WRITE C left to Python, unaligned, paused, ...) */
    grant = PyMem_Calloc(1, sizeof(Grant));
    if (grant == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (core_init(&grant->core, uid, gid, gids, fsid, root_dev, generation) < 0)
        goto done;
    grant->usage = PyObject_GetAttrString(backend, "usage");
    grant->pause = grant->usage ? PyObject_GetAttrString(backend, "inline_writes") : NULL;
    grant->directory = grant->pause ? PyObject_GetAttrString(backend, "directory") : NULL;
    if (grant->directory == NULL)
        goto done;
    Py_INCREF(node);
    grant->node = node;
    grant->core.fd = fd;
    table_keep((GrantTable *)self, key, grant, GRANT_NAME, grant_free, grant_release);
    grant = NULL;  /* (the table's, or released) */
done:
    if (grant != NULL)
        grant_release(grant);
    Py_XDECREF(key);
    PyBuffer_Release(&view);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* An attribute of an importable module (a constant the Python path uses); new reference or NULL. */
static PyObject *module_attr(const char *module_name, const char *name) {
    PyObject *module = PyImport_ImportModule(module_name);
    if (module == NULL)
        return NULL;
    PyObject *value = PyObject_GetAttrString(module, name);
    Py_DECREF(module);
    return value;
}

static int WriteGrants_init(WriteGrants *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"state", "drc", "duplicate", NULL};
    PyObject *state, *drc, *duplicate;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO", names, &state, &drc, &duplicate))
        return -1;
    PyObject *committer = PyObject_GetAttrString(state, "committer");
    if (committer == NULL)
        return -1;
    PyObject *statuses = module_attr("acmenfs.oncrpc.drc", "DrcStatus");
    PyObject *new_status = statuses ? PyObject_GetAttrString(statuses, "NEW") : NULL;
    Py_XDECREF(statuses);
    PyObject *blocked = new_status ? module_attr("acmenfs.fs.local_common", "INLINE_CHANGE_MAX_BLOCKED_SECONDS") : NULL;
    double blocked_seconds = blocked ? PyFloat_AsDouble(blocked) : -1.0;
    Py_XDECREF(blocked);
    if (blocked == NULL || (blocked_seconds == -1.0 && PyErr_Occurred())) {
        Py_DECREF(committer);
        Py_XDECREF(new_status);
        return -1;
    }
    Py_INCREF(state);
    Py_INCREF(drc);
    Py_INCREF(duplicate);
    Py_XSETREF(self->state, state);
    Py_XSETREF(self->drc, drc);
    Py_XSETREF(self->duplicate, duplicate);
    Py_XSETREF(self->committer, committer);
    Py_XSETREF(self->new_status, new_status);
    self->blocked_seconds = blocked_seconds;
    self->page_mask = (uintptr_t)sysconf(_SC_PAGESIZE) - 1;
    if (self->grants == NULL && (self->grants = PyDict_New()) == NULL)
        return -1;
    return 0;
}

static int WriteGrants_traverse(WriteGrants *self, visitproc visit, void *arg) {
    Py_VISIT(self->grants);
    Py_VISIT(self->state);
    Py_VISIT(self->committer);
    Py_VISIT(self->drc);
    Py_VISIT(self->duplicate);
    Py_VISIT(self->new_status);
    return 0;
}

static int WriteGrants_clear_refs(WriteGrants *self) {
    Py_CLEAR(self->grants);
    Py_CLEAR(self->state);
    Py_CLEAR(self->committer);
    Py_CLEAR(self->drc);
    Py_CLEAR(self->duplicate);
    Py_CLEAR(self->new_status);
    return 0;
}

static void WriteGrants_dealloc(WriteGrants *self) {
    PyObject_GC_UnTrack(self);
    WriteGrants_clear_refs(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef WriteGrants_methods[] = {
    {"answer", (PyCFunction)(void (*)(void))WriteGrants_answer, METH_FASTCALL,
     "answer(record, client) -> the reply parts ([bytes], or a duplicate's answer), or None: the "
     "Python path answers"},
    {"grant", (PyCFunction)(void (*)(void))WriteGrants_grant, METH_VARARGS | METH_KEYWORDS,
     "grant(record, address, node, fd, uid, gid, gids, fsid, root_dev, generation, backend): answer "
     "UNSTABLE WRITEs like this one (same handle, client address and credential) from now on"},
    GRANT_TABLE_METHODS
    {NULL}
};

static PySequenceMethods WriteGrants_sequence = {.sq_length = (lenfunc)table_len};

static PyTypeObject WriteGrantsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "acmenfs.nfs3._writeaccel.WriteGrants",
    .tp_basicsize = sizeof(WriteGrants),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Grants the Python fast path made; answers the UNSTABLE WRITEs they cover (see the module).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)WriteGrants_init,
    .tp_dealloc = (destructor)WriteGrants_dealloc,
    .tp_traverse = (traverseproc)WriteGrants_traverse,
    .tp_clear = (inquiry)WriteGrants_clear_refs,
    .tp_methods = WriteGrants_methods,
    .tp_as_sequence = &WriteGrants_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "acmenfs.nfs3._writeaccel",
    "The NFSv3 UNSTABLE WRITE of a granted (handle, client, credential), in C (see _writeaccel.c).", -1, NULL,
};

static int intern_names(void) {
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_check, "check"}, {&s_done, "done"}, {&s_drop, "drop"}, {&s_mark_dirty, "mark_dirty"},
        {&s_add, "add"}, {&s_finish, "finish"}, {&s_paused_until, "paused_until"},
        {&s_watch_until, "watch_until"}, {&s_quota_bytes, "quota_bytes"}, {&s_verifier, "verifier"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    unsigned long numbers[3] = {NFS_PROGRAM, NFS_V3, NFSPROC3_WRITE};
    for (int i = 0; i < 3; i++)
        if ((route[i] = PyLong_FromUnsignedLong(numbers[i])) == NULL)
            return -1;
    return 0;
}

PyMODINIT_FUNC PyInit__writeaccel(void) {
    crc_init();
    if (accel_init() < 0 || intern_names() < 0 || PyType_Ready(&WriteGrantsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&WriteGrantsType);
    if (PyModule_AddObject(m, "WriteGrants", (PyObject *)&WriteGrantsType) < 0) {
        Py_DECREF(&WriteGrantsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
