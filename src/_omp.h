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
#endif

/* 1 the first time the calling thread asks for ``which`` (0 or 1), then 0:
 * a per-thread flag (per process where the compiler has no thread-local
 * storage). */
#if defined(__GNUC__) || defined(__clang__)
static __thread int cbp_used[2];
#elif defined(_MSC_VER)
static __declspec(thread) int cbp_used[2];
#else
static int cbp_used[2];
#endif
static int cbp_first_use(int which) {
    if (cbp_used[which]) return 0;
    cbp_used[which] = 1;
    return 1;
}

/* The next share of a phase: *p counts the shares claimed since the
 * region began; returns the claimed count, or -1 once it reached limit.
 * Threads take the phase's shares first come, first served, so a thread
 * that starts late (descheduled by the OS) does not hold the others. A
 * share's work and where it writes do not depend on who takes it. */
static Py_ssize_t cbp_claim(Py_ssize_t *p, Py_ssize_t limit) {
#if defined(_OPENMP) && (defined(__GNUC__) || defined(__clang__))
    Py_ssize_t v = __atomic_load_n(p, __ATOMIC_ACQUIRE);
    while (v < limit) {
        if (__atomic_compare_exchange_n(p, &v, v + 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return v;
    }
    return -1;
#elif defined(_OPENMP)
    Py_ssize_t v = -1;
    #pragma omp critical (cbp_claim)
    {
        if (*p < limit) { v = *p; *p += 1; }
    }
    return v;
#else
    if (*p >= limit) return -1;
    return (*p)++;
#endif
}

/* A barrier for the team of the enclosing region that waits by spinning
 * for at most cbp_spin_ns, then by sleeping (Linux futex).
 *
 * OpenMP's own barrier spins for long (libgomp: 300000 rounds, about a
 * millisecond) before it sleeps. On a machine where another process
 * takes a core, one of the team's threads shares that core and arrives
 * late; the threads spinning for it keep their own cores busy, so the
 * OS cannot move the late thread there. Sleeping soon frees the core:
 * Linux then runs the late thread (or the other process) on it. The
 * short spin keeps the quiet machine's waits, which are microseconds,
 * free of the sleep's wake-up cost. Elsewhere it is OpenMP's barrier. */
typedef struct {
    int n;             /* threads of the team */
    int arrived;       /* threads at the current barrier */
    int generation;    /* barriers passed; the futex word */
    int sleepers;      /* threads asleep on generation */
} cbp_bar;

/* long long: CLOCK_MONOTONIC in nanoseconds passes a 32-bit long's
 * range 2.1 s after boot */
static long long cbp_spin_ns = 50000;

static long long cbp_set_spin_ns(long long ns) {
    long long old = cbp_spin_ns;
    cbp_spin_ns = ns;
    return old;
}

static void cbp_bar_init(cbp_bar *b, int n) {
    b->n = n;
    b->arrived = 0;
    b->generation = 0;
    b->sleepers = 0;
}

#if defined(_OPENMP) && defined(__linux__) && defined(__GNUC__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <limits.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CBP_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define CBP_PAUSE() __asm__ __volatile__("yield")
#else
#define CBP_PAUSE() ((void)0)
#endif
static long long cbp_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static void cbp_bar_wait(cbp_bar *b) {
    int gen = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    int i;
    long long until;
    if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL) == b->n) {
        /* the last one in: open the barrier, wake the sleepers */
        __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->generation, gen + 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST) > 0)
            syscall(SYS_futex, &b->generation, FUTEX_WAKE_PRIVATE, INT_MAX,
                    NULL, NULL, 0);
        return;
    }
    until = cbp_now_ns() + cbp_spin_ns;
    for (;;) {
        for (i = 0; i < 64; i++) {
            if (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) != gen)
                return;
            CBP_PAUSE();
        }
        if (cbp_now_ns() >= until) break;
    }
    /* sleepers is counted before generation is read again (both seq_cst),
     * so the last thread in either sees the count or the wait sees the
     * new generation and returns at once */
    __atomic_add_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&b->generation, __ATOMIC_SEQ_CST) == gen)
        syscall(SYS_futex, &b->generation, FUTEX_WAIT_PRIVATE, gen, NULL,
                NULL, 0);
    __atomic_sub_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
}
#elif defined(_OPENMP)
static void cbp_bar_wait(cbp_bar *b) {
    (void)b;
    #pragma omp barrier
}
#else
static void cbp_bar_wait(cbp_bar *b) { (void)b; }
#endif

#ifndef _OPENMP
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
static Py_ssize_t cbp_fetch_add(Py_ssize_t *p, Py_ssize_t v) {
    Py_ssize_t old = *p;
    *p += v;
    return old;
}
static Py_ssize_t cbp_atomic_read(const Py_ssize_t *p) { return *p; }
#endif

#endif /* CBP_OMP_H */
