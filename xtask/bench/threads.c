/* One process with N threads: the per-syscall cost curve of `cargo xtask
 * bench` (cost against traced threads).
 *
 *   threads N COUNT
 *
 * Starts N - 1 threads that each make a syscall (so zctrace gives each its
 * thread state) and then wait on a condition variable; once all are up,
 * the main thread reads 4 KiB of /dev/zero and writes it to /dev/null
 * COUNT times, prints "loop_ns <ns per read+write pair>", and lets the
 * others go. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t up = PTHREAD_COND_INITIALIZER, go = PTHREAD_COND_INITIALIZER;
static int started, done;

static void *idle(void *arg) {
    (void)arg;
    (void)getppid();
    pthread_mutex_lock(&lock);
    started++;
    pthread_cond_signal(&up);
    while (!done) pthread_cond_wait(&go, &lock);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: threads N COUNT\n");
        return 2;
    }
    int n = atoi(argv[1]);
    long count = atol(argv[2]);
    pthread_t *t = calloc(n, sizeof *t);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int i = 1; i < n; i++) {
        if (pthread_create(&t[i], &attr, idle, NULL) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    pthread_mutex_lock(&lock);
    while (started < n - 1) pthread_cond_wait(&up, &lock);
    pthread_mutex_unlock(&lock);
    static char buf[4096];
    int z = open("/dev/zero", O_RDONLY), d = open("/dev/null", O_WRONLY);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long k = 0; k < count; k++) {
        if (read(z, buf, sizeof buf) != sizeof buf || write(d, buf, sizeof buf) != sizeof buf)
            return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("loop_ns %.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / count);
    pthread_mutex_lock(&lock);
    done = 1;
    pthread_cond_broadcast(&go);
    pthread_mutex_unlock(&lock);
    for (int i = 1; i < n; i++) pthread_join(t[i], NULL);
    return 0;
}
