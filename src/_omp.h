/* OpenMP, fork and CPU-count shims for the core (src/_threads.pxd declares
 * them). Each has a serial twin for builds without OpenMP (Apple clang
 * without libomp, CBP_NO_OPENMP=1), so that the core compiles and runs
 * on one thread there. */
#ifndef CBP_OMP_H
#define CBP_OMP_H

#include <Python.h>

#ifdef _OPENMP
#include <omp.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define CBP_WATCH_FORK 1
#endif
static int cbp_max_threads(void) { return omp_get_max_threads(); }
static int cbp_has_openmp(void) { return 1; }
/* Set in a child forked from this process. The OpenMP runtime's pool
 * threads do not survive fork(), and GNU OpenMP waits for them forever
 * at the child's next team of more than one thread. A team of one never
 * touches the pool (libgomp starts and ends it on the calling thread),
 * so the child runs every region with one thread. */
static volatile int cbp_forked = 0;
static void cbp_mark_forked(void) { cbp_forked = 1; }
static int cbp_watch_fork(void) {
#ifdef CBP_WATCH_FORK
    return pthread_atfork(NULL, NULL, cbp_mark_forked);
#else
    return 0;
#endif
}
static int cbp_in_forked_child(void) { return cbp_forked; }
/* CPUs seen by thread_cap; > 0 replaces the detected count (test hook) */
static int cbp_cpu_override = 0;
static int cbp_set_cpu_override(int n) {
    int old = cbp_cpu_override;
    cbp_cpu_override = n;
    return old;
}
/* the CPUs this thread may run on (its affinity mask in GNU OpenMP) */
static int cbp_cpu_count(void) {
    return cbp_cpu_override > 0 ? cbp_cpu_override : omp_get_num_procs();
}
/* Called by every thread at a region's start: 1 when the team has the
 * nt threads the work was split for; else 0, thread 0 setting *short_team */
static int cbp_full_team(int nt, int *short_team) {
    if (omp_get_num_threads() == nt) return 1;
    if (omp_get_thread_num() == 0) *short_team = 1;
    return 0;
}
/* At most n threads, as many as a region started here would get, and
 * no more than the CPUs: libgomp puts a ~128-byte record per thread of
 * a new team on the caller's stack (100000 threads overflow an 8 MiB
 * stack: SIGSEGV) and exits the process when it cannot create a thread,
 * and threads beyond the CPUs only time-slice them. */
static int cbp_thread_cap(int n) {
    int cap = omp_get_thread_limit();
    int cpus = cbp_cpu_count();
    if (cpus >= 1 && cpus < cap) cap = cpus;
    if (cbp_forked) cap = 1;
    if (omp_get_active_level() >= omp_get_max_active_levels()) cap = 1;
    if (n > cap) n = cap;
    return n < 1 ? 1 : n;
}
/* the core's regions need teams of exactly the size asked for */
static int cbp_dynamic_off(void) {
    int d = omp_get_dynamic();
    omp_set_dynamic(0);
    return d;
}
static void cbp_dynamic_restore(int d) { omp_set_dynamic(d); }
/* an orphaned barrier: binds to the enclosing parallel region */
static void cbp_barrier(void) {
    #pragma omp barrier
}
/* *p += v, returning the value before, as one atomic operation */
static Py_ssize_t cbp_fetch_add(Py_ssize_t *p, Py_ssize_t v) {
    Py_ssize_t old;
    #pragma omp atomic capture
    { old = *p; *p += v; }
    return old;
}
static Py_ssize_t cbp_atomic_read(const Py_ssize_t *p) {
    Py_ssize_t v;
    #pragma omp atomic read
    v = *p;
    return v;
}
#else
static int cbp_max_threads(void) { return 1; }
static int cbp_has_openmp(void) { return 0; }
static int cbp_full_team(int nt, int *short_team) {
    if (nt == 1) return 1;
    *short_team = 1;
    return 0;
}
static int cbp_thread_cap(int n) { return 1; }
static int cbp_watch_fork(void) { return 0; }
static int cbp_in_forked_child(void) { return 0; }
static int cbp_set_cpu_override(int n) { (void)n; return 0; }
static int cbp_cpu_count(void) { return 1; }
static int cbp_dynamic_off(void) { return 0; }
static void cbp_dynamic_restore(int d) { (void)d; }
static void cbp_barrier(void) {}
static Py_ssize_t cbp_fetch_add(Py_ssize_t *p, Py_ssize_t v) {
    Py_ssize_t old = *p;
    *p += v;
    return old;
}
static Py_ssize_t cbp_atomic_read(const Py_ssize_t *p) { return *p; }
#endif

#endif /* CBP_OMP_H */
