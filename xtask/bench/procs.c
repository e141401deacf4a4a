/* Many live processes, each with a few counter rows: the sampler's load in
 * `cargo xtask bench` (the "sampling cost against live rows" curve).
 *
 *   procs N SECONDS
 *
 * Forks N children; each reads a byte of /dev/zero and writes it to
 * /dev/null twice a second for SECONDS, so its rows stay live. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: procs N SECONDS\n");
        return 2;
    }
    int n = atoi(argv[1]), secs = atoi(argv[2]);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            char c = 0;
            int z = open("/dev/zero", O_RDONLY), d = open("/dev/null", O_WRONLY);
            for (int k = 0; k < secs * 2; k++) {
                if (read(z, &c, 1) != 1 || write(d, &c, 1) != 1) _exit(1);
                usleep(500000);
            }
            _exit(0);
        }
        if (p < 0) {
            perror("fork");
            return 1;
        }
    }
    while (wait(NULL) > 0) {
    }
    return 0;
}
