/* bus._frames: read whole ZeroMQ messages in one call (every connection's reads; a tap's, such as
 * the telemetry sink's hot path, many at a time).
 *
 * pyzmq tells whether a frame has more behind it only through a Frame object or a getsockopt,
 * ~1.5 us each, on top of a ~0.2 us read: most of what reading an event costs. Here libzmq's
 * zmq_msg_more answers it for nothing, so message boundaries are exact and cheap.
 *
 * No link-time dependency on libzmq: bus/sockio.py hands over the addresses of the functions of
 * the libzmq pyzmq itself loaded (ctypes), so sockets are read by the library that made them.
 * Non-blocking reads only; the GIL is held throughout (each read is a few hundred nanoseconds).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stddef.h>

typedef struct {
    unsigned char _[64] __attribute__((aligned(sizeof(void *))));
} zmq_msg_t; /* as zmq.h (4.x) lays it out */

#define ZMQ_DONTWAIT 1 /* zmq.h */

static int (*msg_init)(zmq_msg_t *);
static int (*msg_recv)(zmq_msg_t *, void *, int);
static void *(*msg_data)(zmq_msg_t *);
static size_t (*msg_size)(const zmq_msg_t *);
static int (*msg_more)(const zmq_msg_t *);
static int (*msg_close)(zmq_msg_t *);
static int (*zmq_errno_fn)(void);

static PyObject *
bind(PyObject *self, PyObject *args)
{
    unsigned long long a[7];
    if (!PyArg_ParseTuple(args, "KKKKKKK", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6]))
        return NULL;
    for (int i = 0; i < 7; i++) {
        if (a[i] == 0) {
            PyErr_SetString(PyExc_ValueError, "a libzmq function address is 0");
            return NULL;
        }
    }
    msg_init = (int (*)(zmq_msg_t *))(uintptr_t)a[0];
    msg_recv = (int (*)(zmq_msg_t *, void *, int))(uintptr_t)a[1];
    msg_data = (void *(*)(zmq_msg_t *))(uintptr_t)a[2];
    msg_size = (size_t(*)(const zmq_msg_t *))(uintptr_t)a[3];
    msg_more = (int (*)(const zmq_msg_t *))(uintptr_t)a[4];
    msg_close = (int (*)(zmq_msg_t *))(uintptr_t)a[5];
    zmq_errno_fn = (int (*)(void))(uintptr_t)a[6];
    Py_RETURN_NONE;
}

/* recv_messages(handle, limit) -> (messages, errno)
 *
 * Up to ``limit`` whole messages waiting on the socket whose libzmq handle is ``handle``, each a
 * list of its frames (bytes). errno is 0 when the socket ran out (EAGAIN) or ``limit`` was
 * reached, else the error that stopped the reading: the messages read before it are returned
 * with it, so nothing read is ever dropped. A message is never split: ZeroMQ delivers its frames
 * together, and an error after its first frame keeps the frames read as a message of their own.
 */
static PyObject *
recv_messages(PyObject *self, PyObject *args)
{
    unsigned long long handle;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "Kn", &handle, &limit))
        return NULL;
    if (msg_recv == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bus._frames.bind() was not called");
        return NULL;
    }
    if (handle == 0) {
        PyErr_SetString(PyExc_ValueError, "no socket");
        return NULL;
    }
    void *sock = (void *)(uintptr_t)handle;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    zmq_msg_t msg;
    int err = 0;
    msg_init(&msg);
    for (Py_ssize_t n = 0; n < limit && err == 0; n++) {
        PyObject *frames = NULL;
        for (;;) {
            if (msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
                int e = zmq_errno_fn();
                if (e == EINTR)
                    continue; /* a signal, not the socket: read again (as pyzmq does) */
                err = (e == EAGAIN && frames == NULL) ? -1 : e;
                break;
            }
            PyObject *b = PyBytes_FromStringAndSize((const char *)msg_data(&msg), (Py_ssize_t)msg_size(&msg));
            int more = msg_more(&msg);
            if (b == NULL)
                goto fail;
            if (frames == NULL && (frames = PyList_New(0)) == NULL) {
                Py_DECREF(b);
                goto fail;
            }
            int rc = PyList_Append(frames, b);
            Py_DECREF(b);
            if (rc < 0)
                goto fail;
            if (!more)
                break;
        }
        if (frames != NULL) {
            int rc = PyList_Append(out, frames);
            Py_DECREF(frames);
            if (rc < 0)
                goto fail_out;
        }
        continue;
    fail:
        Py_XDECREF(frames);
    fail_out:
        msg_close(&msg);
        Py_DECREF(out);
        return NULL;
    }
    msg_close(&msg);
    return Py_BuildValue("(Ni)", out, err < 0 ? 0 : err);
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "bind(msg_init, msg_recv, msg_data, msg_size, msg_more, msg_close, errno): libzmq's functions, by address."},
    {"recv_messages", recv_messages, METH_VARARGS, "recv_messages(handle, limit) -> (messages, errno)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "bus._frames", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__frames(void)
{
    return PyModule_Create(&module);
}
