# Declarations with which Cython compiles flownet.py into palmsim.engine.flownet_c (setup.py;
# Cython finds this file by the module's name): the flow network's classes become extension
# types with C fields. flownet.py stays the one source of the logic and runs unchanged as
# plain Python; this file only gives the compiler the types.

cdef class _Flow:
    cdef public long long flow_id
    cdef public tuple channels
    cdef public double cap_bytes_per_s
    cdef public object key
    cdef public double size_bytes
    cdef public double latency_s
    cdef public double start_s
    cdef public object done
    cdef public tuple meta
    cdef public double remaining_bytes
    cdef public double rate_bytes_per_s
    cdef public double updated_s
    cdef public double finish_s
    cdef public _Group group
    cdef public long long stamp


cdef class _Group:
    cdef public list flows
    cdef public bint is_current


cdef class FlowNetwork:
    cdef public object env
    cdef list _capacity
    cdef tuple _append
    cdef object _code
    cdef list _flows_on
    cdef list _heap
    cdef long long _next_id
    cdef long long _num_groups
    cdef double _timer_at
    cdef list _touched
    cdef bint _flush_pending
    cdef long long _num_flushes
    cdef list _channel_stamp
    cdef dict _fair_rates
    cdef public long long num_active

    cdef _schedule_flush(self)
    cdef _flush(self)
    cdef _arm(self)
    cdef _record(self, flow_id, tuple transfer, double start_s, double end_s,
                 double size_bytes, microbatch)
    cdef _drained(self, _Flow flow, double now)
