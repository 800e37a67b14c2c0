/* The counting core of the top-* operators, compiled: the same steps as the pure-Python
 * reader in blocks.py (which stays as the fallback when this module is not built).
 *
 * A `Counter` holds the state of one report: the messages in flight (a dict of message
 * number -> Msg), the deliveries in flight (delivery number -> the Row its start was
 * counted in, or None) and the rows (key -> Row).  `feed(block, pos)` reads whole
 * tai64n-stamped lines from `pos` and stops at the first line it leaves to Python: a line
 * without a plain tai64n stamp, with a CR, a known line that does not fit its format, or a
 * number too long for 18 digits.  Python reads that line with the reference parser and
 * applies it through the event methods (`start`, `result`, `info`, `new_msg`, `end_msg`,
 * `restart`), so both kinds of line change the same state.
 *
 * Row keys are worked out by Python functions given to the constructor (decoding, the
 * virtual-domain prefix, lower-casing a domain) and cached per raw recipient here, so the
 * rules live in one place (blocks.py / operators.py).
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE /* memrchr */
#include <Python.h>
#include <string.h>

/* ---- Row: one line of the report ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    long long c[5];  /* messages, deliveries, successes, deferrals, failures */
    PyObject *bytes; /* a Python int: sizes are not bounded by the log's format */
} Row;

static void Row_dealloc(Row *r) { Py_XDECREF(r->bytes); Py_TYPE(r)->tp_free((PyObject *)r); }

static PyTypeObject RowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mailyard.logtools._fastcount.Row",
    .tp_basicsize = sizeof(Row),
    .tp_dealloc = (destructor)Row_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

static PyObject *zero;

static Row *row_new(void) {
    Row *r = PyObject_New(Row, &RowType);
    if (!r) return NULL;
    memset(r->c, 0, sizeof r->c);
    Py_INCREF(zero);
    r->bytes = zero;
    return r;
}

/* ---- Msg: one message in flight -------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *bytes;   /* int */
    PyObject *sender;  /* str, or NULL while its info line is not read */
    PyObject *skey;    /* the row key of its sender, cached, or NULL */
    PyObject *counted; /* set of row keys it was counted in, or NULL */
} Msg;

static void Msg_dealloc(Msg *m) {
    Py_XDECREF(m->bytes);
    Py_XDECREF(m->sender);
    Py_XDECREF(m->skey);
    Py_XDECREF(m->counted);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyTypeObject MsgType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mailyard.logtools._fastcount.Msg",
    .tp_basicsize = sizeof(Msg),
    .tp_dealloc = (destructor)Msg_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

/* ---- Counter ---------------------------------------------------------------------------- */

enum { BY_RECIPIENT = 0, BY_SENDER = 1, BY_USER = 2 };
enum { ANY = 0, LOCAL = 1, REMOTE = 2 };

typedef struct {
    PyObject_HEAD
    int by, channel, per_domain;
    Py_ssize_t max_messages, max_deliveries, max_cached;
    PyObject *messages, *deliveries, *rows, *cache_local, *cache_remote, *cache_domain;
    PyObject *recipient_key, *sender_key, *domain_key, *unknown;
    PyObject *last_delivery;
    long long restarts, early, forgotten, orphans;
} Counter;

static void Counter_dealloc(Counter *s) {
    Py_XDECREF(s->messages);
    Py_XDECREF(s->deliveries);
    Py_XDECREF(s->rows);
    Py_XDECREF(s->cache_local);
    Py_XDECREF(s->cache_remote);
    Py_XDECREF(s->cache_domain);
    Py_XDECREF(s->domain_key);
    Py_XDECREF(s->recipient_key);
    Py_XDECREF(s->sender_key);
    Py_XDECREF(s->unknown);
    Py_XDECREF(s->last_delivery);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int Counter_init(Counter *s, PyObject *args, PyObject *kw) {
    static char *names[] = {"by", "channel", "per_domain", "max_messages", "max_deliveries",
                            "max_cached", "recipient_key", "sender_key", "domain_key",
                            "unknown", NULL};
    PyObject *rk, *sk, *dk, *unknown;
    if (s->messages) {
        PyErr_SetString(PyExc_RuntimeError, "a Counter is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iipnnnOOOU", names, &s->by, &s->channel,
                                     &s->per_domain, &s->max_messages, &s->max_deliveries,
                                     &s->max_cached, &rk, &sk, &dk, &unknown))
        return -1;
    s->messages = PyDict_New();
    s->deliveries = PyDict_New();
    s->rows = PyDict_New();
    s->cache_local = PyDict_New();
    s->cache_remote = PyDict_New();
    s->cache_domain = PyDict_New();
    if (!s->messages || !s->deliveries || !s->rows || !s->cache_local || !s->cache_remote ||
        !s->cache_domain)
        return -1;
    Py_INCREF(dk); s->domain_key = dk;
    Py_INCREF(rk); s->recipient_key = rk;
    Py_INCREF(sk); s->sender_key = sk;
    Py_INCREF(unknown); s->unknown = unknown;
    Py_INCREF(zero); s->last_delivery = zero;
    return 0;
}

/* Remove the oldest entry of a dict past its cap (dicts keep insertion order). */
static int drop_oldest(PyObject *d, long long *forgotten) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    if (PyDict_Next(d, &pos, &k, &v)) {
        Py_INCREF(k);
        int rc = PyDict_DelItem(d, k);
        Py_DECREF(k);
        if (rc < 0) return -1;
        (*forgotten)++;
    }
    return 0;
}

/* Tracker._add_message: a new message (an inode number reused: the old one is gone).
 * Returns a new reference. */
static Msg *add_message(Counter *s, PyObject *num) {
    Msg *m = PyObject_New(Msg, &MsgType);
    if (!m) return NULL;
    Py_INCREF(zero);
    m->bytes = zero;
    m->sender = m->skey = m->counted = NULL;
    if (PyDict_GetItemWithError(s->messages, num)) {
        if (PyDict_DelItem(s->messages, num) < 0) goto fail;
    } else if (PyErr_Occurred()) goto fail;
    if (PyDict_SetItem(s->messages, num, (PyObject *)m) < 0) goto fail;
    if (PyDict_GET_SIZE(s->messages) > s->max_messages &&
        drop_oldest(s->messages, &s->forgotten) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}

static int do_restart(Counter *s) {
    PyDict_Clear(s->deliveries);
    Py_INCREF(zero);
    Py_SETREF(s->last_delivery, zero);
    s->restarts++;
    return 0;
}

static int do_new(Counter *s, PyObject *num) {
    Msg *m = add_message(s, num);
    if (!m) return -1;
    Py_DECREF(m);
    return 0;
}

/* `info msg`: steals nothing; sender is a str. */
static int do_info(Counter *s, PyObject *num, PyObject *bytes, PyObject *sender) {
    Msg *m = (Msg *)PyDict_GetItemWithError(s->messages, num);
    if (m) Py_INCREF(m);
    else if (PyErr_Occurred()) return -1;
    else if (!(m = add_message(s, num))) return -1;
    Py_INCREF(bytes);
    Py_SETREF(m->bytes, bytes);
    Py_INCREF(sender);
    Py_XSETREF(m->sender, sender);
    Py_CLEAR(m->skey);
    Py_DECREF(m);
    return 0;
}

static int do_end(Counter *s, PyObject *num) {
    if (PyDict_GetItemWithError(s->messages, num)) return PyDict_DelItem(s->messages, num);
    return PyErr_Occurred() ? -1 : 0;
}

/* The row key of a domain (the bytes after a recipient's last "@"), cached. New reference. */
static PyObject *domain_key(Counter *s, const char *d, Py_ssize_t n) {
    PyObject *raw = PyBytes_FromStringAndSize(d, n);
    if (!raw) return NULL;
    PyObject *key = PyDict_GetItemWithError(s->cache_domain, raw);
    if (key) { Py_INCREF(key); Py_DECREF(raw); return key; }
    if (PyErr_Occurred()) { Py_DECREF(raw); return NULL; }
    key = PyObject_CallOneArg(s->domain_key, raw);
    if (key && PyDict_GET_SIZE(s->cache_domain) >= s->max_cached) PyDict_Clear(s->cache_domain);
    if (key && PyDict_SetItem(s->cache_domain, raw, key) < 0) Py_CLEAR(key);
    Py_DECREF(raw);
    return key;
}

/* The row key of a recipient (`raw`: its bytes as logged), cached. New reference.
 * Per domain, a recipient with a domain counts under that domain (the virtual-domain prefix
 * of a local one is in front of its "@", so it does not change it): looked up by domain. */
static PyObject *recipient_key(Counter *s, PyObject *raw, int local) {
    if (s->per_domain) {
        const char *r = PyBytes_AS_STRING(raw);
        Py_ssize_t n = PyBytes_GET_SIZE(raw);
        const char *at = n ? memrchr(r, '@', n) : NULL;
        if (at && at + 1 < r + n) return domain_key(s, at + 1, r + n - at - 1);
    }
    PyObject *cache = local ? s->cache_local : s->cache_remote;
    PyObject *key = PyDict_GetItemWithError(cache, raw);
    if (key) { Py_INCREF(key); return key; }
    if (PyErr_Occurred()) return NULL;
    key = PyObject_CallFunctionObjArgs(s->recipient_key, raw, local ? Py_True : Py_False, NULL);
    if (!key) return NULL;
    if (PyDict_SetItem(cache, raw, key) < 0) { Py_DECREF(key); return NULL; }
    if (PyDict_GET_SIZE(s->cache_local) + PyDict_GET_SIZE(s->cache_remote) > s->max_cached) {
        PyDict_Clear(s->cache_local);
        PyDict_Clear(s->cache_remote);
    }
    return key;
}

static PyObject *sender_key(Counter *s, Msg *m) {
    if (!m->skey) {
        m->skey = PyObject_CallFunctionObjArgs(s->sender_key, m->sender ? m->sender : Py_None,
                                               NULL);
        if (!m->skey) return NULL;
    }
    Py_INCREF(m->skey);
    return m->skey;
}

static Row *get_row(Counter *s, PyObject *key) {
    Row *row = (Row *)PyDict_GetItemWithError(s->rows, key);
    if (row) return row;
    if (PyErr_Occurred()) return NULL;
    row = row_new();
    if (!row) return NULL;
    if (PyDict_SetItem(s->rows, key, (PyObject *)row) < 0) { Py_DECREF(row); return NULL; }
    Py_DECREF(row);  /* the dict holds it */
    return row;
}

/* `starting delivery`: Tracker.start, then TopCounter.start.  `raw`: recipient bytes. */
static int do_start(Counter *s, PyObject *num, PyObject *msgnum, int local, PyObject *raw) {
    int le = PyObject_RichCompareBool(num, s->last_delivery, Py_LE);
    if (le < 0) return -1;
    if (le) do_restart(s);  /* a crash without `status: exiting` */
    Py_INCREF(num);
    Py_SETREF(s->last_delivery, num);
    Msg *m = (Msg *)PyDict_GetItemWithError(s->messages, msgnum);
    if (m) Py_INCREF(m);
    else if (PyErr_Occurred()) return -1;
    else {
        if (!(m = add_message(s, msgnum))) return -1;
        s->early++;
    }
    PyObject *value = Py_None;  /* the row, or None when the channel is not counted */
    Row *row = NULL;
    if (s->channel == ANY || (s->channel == LOCAL) == (local != 0)) {
        PyObject *key = (s->by == BY_RECIPIENT || (s->by == BY_USER && local))
                            ? recipient_key(s, raw, local) : sender_key(s, m);
        if (!key) goto fail;
        row = get_row(s, key);
        if (!row) { Py_DECREF(key); goto fail; }
        if (!m->counted && !(m->counted = PySet_New(NULL))) { Py_DECREF(key); goto fail; }
        int seen = PySet_Contains(m->counted, key);
        if (seen < 0 || (!seen && PySet_Add(m->counted, key) < 0)) { Py_DECREF(key); goto fail; }
        Py_DECREF(key);
        if (!seen) {
            row->c[0]++;
            PyObject *sum = PyNumber_Add(row->bytes, m->bytes);
            if (!sum) goto fail;
            Py_SETREF(row->bytes, sum);
        }
        row->c[1]++;
        value = (PyObject *)row;
    }
    if (PyDict_GetItemWithError(s->deliveries, num)) {
        if (PyDict_DelItem(s->deliveries, num) < 0) goto fail;
    } else if (PyErr_Occurred()) goto fail;
    if (PyDict_SetItem(s->deliveries, num, value) < 0) goto fail;
    if (PyDict_GET_SIZE(s->deliveries) > s->max_deliveries &&
        drop_oldest(s->deliveries, &s->forgotten) < 0) goto fail;
    Py_DECREF(m);
    return 0;
fail:
    Py_DECREF(m);
    return -1;
}

/* `delivery D: RESULT`: col 2 success, 3 deferral (or mangled), 4 failure. */
static int do_result(Counter *s, PyObject *num, int col) {
    PyObject *v = PyDict_GetItemWithError(s->deliveries, num);
    if (v) {
        Py_INCREF(v);
        if (PyDict_DelItem(s->deliveries, num) < 0) { Py_DECREF(v); return -1; }
        if (v != Py_None) ((Row *)v)->c[col]++;
        Py_DECREF(v);
        return 0;
    }
    if (PyErr_Occurred()) return -1;
    s->orphans++;
    if (s->channel == ANY) {
        Row *row = get_row(s, s->unknown);
        if (!row) return -1;
        row->c[1]++;
        row->c[col]++;
    }
    return 0;
}

/* ---- the line reader ------------------------------------------------------------------- */

static unsigned char hexdigit[256];

#define HAS(lit) (n >= (Py_ssize_t)(sizeof(lit) - 1) && memcmp(t, lit, sizeof(lit) - 1) == 0)
#define SKIP(lit) (t += sizeof(lit) - 1, n -= sizeof(lit) - 1)

/* Read 1 to 18 ASCII digits at *t; -1 if none or too many (Python reads those). */
static long long digits(const char **t, Py_ssize_t *n) {
    const char *p = *t;
    Py_ssize_t i = 0;
    long long v = 0;
    while (i < *n && p[i] >= '0' && p[i] <= '9') {
        if (i == 18) return -1;
        v = v * 10 + (p[i] - '0');
        i++;
    }
    if (i == 0) return -1;
    *t += i;
    *n -= i;
    return v;
}

/* After the last field: the end of the line, or a space and any extra text. */
#define END_OK (n == 0 || t[0] == ' ')

/* The rest of an info line after "from <", as qmail-send writes it: SENDER> qp P uid U,
 * then the end or a space.  The sender is the longest text that lets the rest match (the
 * reference's pattern is greedy).  Sets *sn to the sender's length; 0 if it does not fit. */
static int info_tail(const char *t, Py_ssize_t n, Py_ssize_t *sn) {
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        if (t[i] != '>') continue;
        const char *u = t + i;
        Py_ssize_t m = n - i;
        if (m < 5 || memcmp(u, "> qp ", 5) != 0) continue;
        u += 5; m -= 5;
        Py_ssize_t k = 0;
        while (k < m && u[k] >= '0' && u[k] <= '9') k++;
        if (k == 0) continue;
        u += k; m -= k;
        if (m < 5 || memcmp(u, " uid ", 5) != 0) continue;
        u += 5; m -= 5;
        k = 0;
        while (k < m && u[k] >= '0' && u[k] <= '9') k++;
        if (k == 0) continue;
        if (k < m && u[k] != ' ') continue;
        *sn = i;
        return 1;
    }
    return 0;
}

/* One line's text (after the stamp and its space, without the line end).
 * 1: read (or rightly ignored); 0: left to Python; -1: error. */
static int read_line(Counter *s, const char *t, Py_ssize_t n) {
    long long a, b;
    PyObject *x, *y, *z;
    int rc;
    if (n == 0) return 1;
    switch (t[0]) {
    case 's':
        if (HAS("status:")) {
            if (n == 15 && memcmp(t, "status: exiting", 15) == 0) do_restart(s);
            return 1;
        }
        if (!HAS("starting delivery ")) return 1;
        SKIP("starting delivery ");
        if ((a = digits(&t, &n)) < 0 || !HAS(": msg ")) return 0;
        SKIP(": msg ");
        if ((b = digits(&t, &n)) < 0 || !HAS(" to ")) return 0;
        SKIP(" to ");
        int local;
        if (HAS("local ")) { SKIP("local "); local = 1; }
        else if (HAS("remote ")) { SKIP("remote "); local = 0; }
        else return 0;
        const char *sp = memchr(t, ' ', n);
        Py_ssize_t rn = sp ? sp - t : n;
        x = PyLong_FromLongLong(a);
        y = PyLong_FromLongLong(b);
        z = PyBytes_FromStringAndSize(t, rn);
        rc = (x && y && z) ? do_start(s, x, y, local, z) : -1;
        Py_XDECREF(x); Py_XDECREF(y); Py_XDECREF(z);
        return rc < 0 ? -1 : 1;
    case 'd':
        if (HAS("delivery ")) {
            SKIP("delivery ");
            if ((a = digits(&t, &n)) < 0 || !HAS(": ")) return 0;
            SKIP(": ");
            int col;
            if (HAS("success:")) col = 2;
            else if (HAS("deferral:")) col = 3;
            else if (HAS("failure:")) col = 4;
            else if (n == 26 && memcmp(t, "report mangled, will defer", 26) == 0) col = 3;
            else return 0;
            if (!(x = PyLong_FromLongLong(a))) return -1;
            rc = do_result(s, x, col);
            Py_DECREF(x);
            return rc < 0 ? -1 : 1;
        }
        if (HAS("double bounce: ")) {
            SKIP("double bounce: ");
            goto discarding;
        }
        return 1;
    case 't':
        if (!HAS("triple bounce: ")) return 1;
        SKIP("triple bounce: ");
    discarding:
        if (!HAS("discarding bounce/")) return 0;
        SKIP("discarding bounce/");
        return (digits(&t, &n) >= 0 && END_OK) ? 1 : 0;
    case 'b':
        if (!HAS("bounce msg ")) return 1;
        SKIP("bounce msg ");
        if (digits(&t, &n) < 0 || !HAS(" qp ")) return 0;
        SKIP(" qp ");
        return (digits(&t, &n) >= 0 && END_OK) ? 1 : 0;
    case 'n':
    case 'e':
        if (t[0] == 'n' ? !HAS("new msg ") : !HAS("end msg ")) return 1;
        int is_new = t[0] == 'n';
        t += 8; n -= 8;
        if ((a = digits(&t, &n)) < 0 || !END_OK) return 0;
        if (!(x = PyLong_FromLongLong(a))) return -1;
        rc = is_new ? do_new(s, x) : do_end(s, x);
        Py_DECREF(x);
        return rc < 0 ? -1 : 1;
    case 'i':
        if (!HAS("info msg ")) return 1;
        SKIP("info msg ");
        if ((a = digits(&t, &n)) < 0 || !HAS(": bytes ")) return 0;
        SKIP(": bytes ");
        if ((b = digits(&t, &n)) < 0 || !HAS(" from <")) return 0;
        SKIP(" from <");
        Py_ssize_t sn;
        if (!info_tail(t, n, &sn)) return 0;
        x = PyLong_FromLongLong(a);
        y = PyLong_FromLongLong(b);
        z = PyUnicode_DecodeUTF8(t, sn, "surrogateescape");
        rc = (x && y && z) ? do_info(s, x, y, z) : -1;
        Py_XDECREF(x); Py_XDECREF(y); Py_XDECREF(z);
        return rc < 0 ? -1 : 1;
    case 'h':  /* the administrator's actions (parser.QueueAction): rare, Python reads them */
        return HAS("hold msg ") ? 0 : 1;
    case 'r':
        return (HAS("release msg ") || HAS("retry msg ")) ? 0 : 1;
    case 'w':
        if (!HAS("warning: ")) return 1;
        for (Py_ssize_t i = 9; i + 21 <= n; i++)
            if (t[i] == ' ' && memcmp(t + i, " by the administrator", 21) == 0) return 0;
        return 1;
    default:
        return 1;
    }
}

/* feed(block, pos) -> the offset of the first line left to Python, or len(block). */
static PyObject *Counter_feed(Counter *s, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &pos)) return NULL;
    const char *data = buf.buf, *end = data + buf.len;
    const char *p = data + (pos < 0 ? 0 : pos > buf.len ? buf.len : pos);
    int cr = memchr(p, '\r', end - p) != NULL;
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        if (!nl) break;
        if (nl - p < 26 || p[0] != '@' || p[25] != ' ' || (cr && memchr(p, '\r', nl - p)))
            break;
        int ok = 1;
        for (int i = 1; i < 25; i++) ok &= hexdigit[(unsigned char)p[i]];
        if (!ok) break;
        int rc = read_line(s, p + 26, nl - p - 26);
        if (rc < 0) { PyBuffer_Release(&buf); return NULL; }
        if (rc == 0) break;
        p = nl + 1;
    }
    Py_ssize_t at = p - data;
    PyBuffer_Release(&buf);
    return PyLong_FromSsize_t(at);
}

static PyObject *Counter_start(Counter *s, PyObject *args) {
    PyObject *num, *msg, *raw;
    int local;
    if (!PyArg_ParseTuple(args, "O!O!pO!", &PyLong_Type, &num, &PyLong_Type, &msg, &local,
                          &PyBytes_Type, &raw))
        return NULL;
    if (do_start(s, num, msg, local, raw) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Counter_result(Counter *s, PyObject *args) {
    PyObject *num;
    int col;
    if (!PyArg_ParseTuple(args, "O!i", &PyLong_Type, &num, &col)) return NULL;
    if (col < 2 || col > 4) { PyErr_SetString(PyExc_ValueError, "col must be 2, 3 or 4"); return NULL; }
    if (do_result(s, num, col) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Counter_info(Counter *s, PyObject *args) {
    PyObject *num, *bytes, *sender;
    if (!PyArg_ParseTuple(args, "O!O!U", &PyLong_Type, &num, &PyLong_Type, &bytes, &sender))
        return NULL;
    if (do_info(s, num, bytes, sender) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Counter_new_msg(Counter *s, PyObject *num) {
    if (!PyLong_Check(num)) { PyErr_SetString(PyExc_TypeError, "an int"); return NULL; }
    if (do_new(s, num) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Counter_end_msg(Counter *s, PyObject *num) {
    if (!PyLong_Check(num)) { PyErr_SetString(PyExc_TypeError, "an int"); return NULL; }
    if (do_end(s, num) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Counter_restart(Counter *s, PyObject *unused) {
    do_restart(s);
    Py_RETURN_NONE;
}

/* rows() -> {key: [messages, deliveries, successes, deferrals, failures, bytes]} */
static PyObject *Counter_rows(Counter *s, PyObject *unused) {
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(s->rows, &pos, &k, &v)) {
        Row *r = (Row *)v;
        PyObject *list = Py_BuildValue("[LLLLLO]", r->c[0], r->c[1], r->c[2], r->c[3], r->c[4],
                                       r->bytes);
        if (!list || PyDict_SetItem(out, k, list) < 0) { Py_XDECREF(list); Py_DECREF(out); return NULL; }
        Py_DECREF(list);
    }
    return out;
}

/* counts() -> (restarts, early messages, forgotten entries, orphan results) */
static PyObject *Counter_counts(Counter *s, PyObject *unused) {
    return Py_BuildValue("(LLLL)", s->restarts, s->early, s->forgotten, s->orphans);
}

static PyMethodDef Counter_methods[] = {
    {"feed", (PyCFunction)Counter_feed, METH_VARARGS,
     "feed(block, pos) -> offset of the first line left to Python, or len(block)"},
    {"start", (PyCFunction)Counter_start, METH_VARARGS,
     "start(delivery, msg, local, recipient_bytes): a `starting delivery` line"},
    {"result", (PyCFunction)Counter_result, METH_VARARGS,
     "result(delivery, column): a `delivery D:` line (column 2, 3 or 4)"},
    {"info", (PyCFunction)Counter_info, METH_VARARGS, "info(msg, bytes, sender): an `info msg` line"},
    {"new_msg", (PyCFunction)Counter_new_msg, METH_O, "new_msg(msg): a `new msg` line"},
    {"end_msg", (PyCFunction)Counter_end_msg, METH_O, "end_msg(msg): an `end msg` line"},
    {"restart", (PyCFunction)Counter_restart, METH_NOARGS, "qmail-send restarted"},
    {"rows", (PyCFunction)Counter_rows, METH_NOARGS, "the report's rows"},
    {"counts", (PyCFunction)Counter_counts, METH_NOARGS,
     "(restarts, early messages, forgotten entries, orphan results)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mailyard.logtools._fastcount.Counter",
    .tp_basicsize = sizeof(Counter),
    .tp_dealloc = (destructor)Counter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The state of one top-* report, fed with blocks of a send log.",
    .tp_methods = Counter_methods,
    .tp_init = (initproc)Counter_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastcount",
    .m_doc = "The compiled counting core of the top-* operators (see blocks.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastcount(void) {
    for (int c = '0'; c <= '9'; c++) hexdigit[c] = 1;
    for (int c = 'a'; c <= 'f'; c++) hexdigit[c] = hexdigit[c - 'a' + 'A'] = 1;
    if (PyType_Ready(&RowType) < 0 || PyType_Ready(&MsgType) < 0 || PyType_Ready(&CounterType) < 0)
        return NULL;
    zero = PyLong_FromLong(0);
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&CounterType);
    if (PyModule_AddObject(m, "Counter", (PyObject *)&CounterType) < 0) {
        Py_DECREF(&CounterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
