/* Many threads, each copying a cached file into a pipe in small blocks:
 * the shape of a thread-per-connection server. Built and run by
 * accounting.rs.
 *
 *   threads FILE THREADS ALIVE ITERS BLOCK
 *
 * THREADS threads in all, ALIVE of them at once (waves released together
 * by a barrier, so they are all alive while they copy); each does ITERS
 * times pread(FILE, BLOCK) + write(pipe, BLOCK). One drain thread reads
 * the pipe in 64 KiB reads. Prints the bytes drained; exits non-zero if
 * any call came up short. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int file_fd, pipe_rd, pipe_wr, iters, block;
static long file_blocks;
static pthread_barrier_t wave;

static void *worker(void *arg) {
    long id = (long)arg;
    char buf[65536];
    pthread_barrier_wait(&wave);
    for (int i = 0; i < iters; i++) {
        off_t off = ((id * iters + i) % file_blocks) * block;
        if (pread(file_fd, buf, block, off) != block) abort();
        if (write(pipe_wr, buf, block) != block) abort();
    }
    return NULL;
}

static void *drain(void *arg) {
    static char buf[65536];
    long long *total = arg;
    ssize_t n;
    while ((n = read(pipe_rd, buf, sizeof buf)) > 0) *total += n;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: threads FILE THREADS ALIVE ITERS BLOCK\n");
        return 2;
    }
    long threads = atol(argv[2]), alive = atol(argv[3]);
    iters = atoi(argv[4]);
    block = atoi(argv[5]);
    if (block <= 0 || block > 65536 || alive <= 0) return 2;
    file_fd = open(argv[1], O_RDONLY);
    if (file_fd < 0) { perror("open"); return 1; }
    file_blocks = lseek(file_fd, 0, SEEK_END) / block;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) { perror("pipe"); return 1; }
    pipe_rd = p[0];
    pipe_wr = p[1];
    fcntl(pipe_wr, F_SETPIPE_SZ, 1 << 20);
    long long drained = 0;
    pthread_t drainer;
    pthread_create(&drainer, NULL, drain, &drained);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 << 10);
    pthread_t *tids = calloc(alive, sizeof *tids);
    for (long start = 0; start < threads; start += alive) {
        long n = threads - start < alive ? threads - start : alive;
        pthread_barrier_init(&wave, NULL, n);
        for (long i = 0; i < n; i++)
            if (pthread_create(&tids[i], &attr, worker, (void *)(start + i)) != 0) {
                perror("pthread_create");
                return 1;
            }
        for (long i = 0; i < n; i++) pthread_join(tids[i], NULL);
        pthread_barrier_destroy(&wave);
    }
    close(pipe_wr);
    pthread_join(drainer, NULL);
    printf("%lld\n", drained);
    return drained == (long long)threads * iters * block ? 0 : 1;
}
