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
 * free of the sleep's wake-up cost. A thread may also leave the team
 * between two barriers (cbp_bar_leave, cbp_should_leave); the later
 * barriers then wait for the others only. Elsewhere it is OpenMP's
 * barrier, which no thread leaves. */
typedef struct {
    /* (members << 32) | arrived: the threads still in the team and those
     * at the current barrier, in one word so that an arrival and a
     * departure (cbp_bar_leave) are ordered and exactly one of them sees
     * the barrier full */
    unsigned long long state;
    int generation;    /* barriers passed; the futex word */
    int sleepers;      /* threads asleep on generation */
} cbp_bar;
#define CBP_BAR_MEMBER (1ULL << 32)
#define CBP_BAR_ARRIVED 0xffffffffULL

/* long long: CLOCK_MONOTONIC in nanoseconds passes a 32-bit long's
 * range 2.1 s after boot */
static long long cbp_spin_ns = 50000;

static long long cbp_set_spin_ns(long long ns) {
    long long old = cbp_spin_ns;
    cbp_spin_ns = ns;
    return old;
}

static void cbp_bar_init(cbp_bar *b, int n) {
    b->state = (unsigned long long)n * CBP_BAR_MEMBER;
    b->generation = 0;
    b->sleepers = 0;
}
/* the threads still in the team (all n but those that left) */
static int cbp_bar_members(cbp_bar *b) {
#if defined(__GNUC__) || defined(__clang__)
    return (int)(__atomic_load_n(&b->state, __ATOMIC_ACQUIRE) >> 32);
#else
    return (int)(b->state >> 32);
#endif
}
/* A test hook: > 0, thread tid >= 1 of an epoch leaves its team after
 * cbp_leave_after + tid - 1 batches whatever its waits; 0: off. */
static long long cbp_leave_after = 0;
static long long cbp_set_leave_after(long long n) {
    long long old = cbp_leave_after;
    cbp_leave_after = n;
    return old;
}
/* threads that left their team (cbp_bar_leave) since the process began */
static long long cbp_departures = 0;
static long long cbp_departure_count(void) {
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_load_n(&cbp_departures, __ATOMIC_RELAXED);
#else
    return cbp_departures;
#endif
}

#if defined(_OPENMP) && defined(__linux__) && defined(__GNUC__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdio.h>
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
/* Open barrier gen: called by the one thread whose arrival or departure
 * made arrived equal members. Every other member waits in it, so none
 * changes state before the new generation is seen. */
static void cbp_bar_open(cbp_bar *b, int gen) {
    __atomic_and_fetch(&b->state, ~CBP_BAR_ARRIVED, __ATOMIC_RELAXED);
    __atomic_store_n(&b->generation, gen + 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST) > 0)
        syscall(SYS_futex, &b->generation, FUTEX_WAKE_PRIVATE, INT_MAX,
                NULL, NULL, 0);
}
static int cbp_bar_full(unsigned long long s) {
    return (s & CBP_BAR_ARRIVED) != 0 && (s & CBP_BAR_ARRIVED) == (s >> 32);
}
/* Leave the team for the rest of the region: the later barriers wait for
 * one thread fewer, and this one (if the others are all in it) opens.
 * Returns 1: the caller must not wait at this barrier again. */
static int cbp_bar_leave(cbp_bar *b) {
    /* the current barrier cannot open before this thread arrives or
     * leaves, so gen is still its generation */
    int gen = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    __atomic_add_fetch(&cbp_departures, 1, __ATOMIC_RELAXED);
    if (cbp_bar_full(__atomic_sub_fetch(&b->state, CBP_BAR_MEMBER,
                                        __ATOMIC_ACQ_REL)))
        cbp_bar_open(b, gen);
    return 1;
}
/* The calling thread's time spent runnable but not running, in ns, from
 * /proc/thread-self/schedstat (its second field); -1 where unreadable. */
static long long cbp_runqueue_wait_ns(void) {
    char buf[96];
    long long run, wait;
    ssize_t got;
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    got = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (got <= 0) return -1;
    buf[got] = 0;
    if (sscanf(buf, "%lld %lld", &run, &wait) != 2) return -1;
    return wait;
}
/* Whether thread tid of a team of nt leaves it after `batches` batches.
 *
 * On a machine whose other work takes one of two cores, the OS slices
 * three threads over two CPUs: each of the team's threads waits for a
 * CPU about 40 % of the time, and every barrier waits for the one that
 * is off its CPU (an epoch 1.1-1.25x slower than n_jobs=1). One thread
 * taking both shares runs as n_jobs=1 does, and no result changes: a
 * share's work does not depend on who takes it (cbp_claim). So in a team
 * of two, thread 1 leaves when it waited for a CPU a quarter or more of
 * each of two windows in a row of at least CBP_WATCH_NS (on a quiet
 * machine: under 5 %; two, so that a burst such as another library's
 * threads spinning down does not decide alone). It rejoins at the next
 * region (epoch), where one such window suffices to leave again. Larger
 * teams stay whole: there the shares of a thread that left make a second
 * round for another, which is no better than waiting for it.
 *
 * The window is the thread's own (thread-local) and runs on across
 * regions, so that short epochs cost no reading of /proc (5 us); it
 * starts afresh after a departure. Time asleep between regions only
 * lengthens it, which errs towards staying. */
#define CBP_WATCH_NS 20000000LL
static __thread long long cbp_watch_t0;   /* window start (ns); 0: none */
static __thread long long cbp_watch_w0;   /* runqueue wait then (ns) */
static __thread int cbp_watch_strikes;    /* windows in a row over 1/4 */
static int cbp_should_leave(int tid, int nt, long long batches) {
    long long now, wait;
    if (cbp_leave_after > 0)
        return tid >= 1 && batches >= cbp_leave_after + tid - 1;
    if (nt != 2 || tid != 1) return 0;
    now = cbp_now_ns();
    if (cbp_watch_t0 != 0 && now - cbp_watch_t0 < CBP_WATCH_NS) return 0;
    wait = cbp_runqueue_wait_ns();
    if (cbp_watch_t0 != 0) {
        if (wait >= 0 && cbp_watch_w0 >= 0
                && 4 * (wait - cbp_watch_w0) >= now - cbp_watch_t0) {
            if (++cbp_watch_strikes >= 2) {
                cbp_watch_t0 = 0;
                cbp_watch_strikes = 1;
                return 1;
            }
        } else {
            cbp_watch_strikes = 0;
        }
    }
    cbp_watch_t0 = now;
    cbp_watch_w0 = wait;
    return 0;
}
static void cbp_bar_wait(cbp_bar *b) {
    int gen = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    int i;
    long long until;
    if (cbp_bar_full(__atomic_add_fetch(&b->state, 1, __ATOMIC_ACQ_REL))) {
        /* the last one in: open the barrier, wake the sleepers */
        cbp_bar_open(b, gen);
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
#else
/* OpenMP's barrier (or none, serially): every thread of the team waits
 * at each, so none leaves */
static int cbp_should_leave(int tid, int nt, long long batches) {
    (void)tid; (void)nt; (void)batches;
    return 0;
}
static int cbp_bar_leave(cbp_bar *b) { (void)b; return 0; }
#if defined(_OPENMP)
static void cbp_bar_wait(cbp_bar *b) {
    (void)b;
    #pragma omp barrier
}
#else
static void cbp_bar_wait(cbp_bar *b) { (void)b; }
#endif
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
