/* The coordinator overhead of the leanest synchronous loop in C: what compiled per-message code
 * would reach on this machine. The same loop as gdcode/runtime/floor.py (read its docstring):
 * rank 0 sends a 100-value model to W workers and rings their doorbells (one byte to an abstract
 * Unix datagram socket, as gdcode's doorbells do), waits for every reply asleep on its own
 * doorbell (or yielding its core with --wait yield, or for the first US microseconds of each wait
 * with --yield-us US), and steps; each worker computes the logistic
 * gradient of 1000 dense rows and replies.
 *
 * Build and run (make overhead-floor does both, with the mpicc of the venv's MPI wheel):
 *     mpicc -O3 -march=native -ffast-math -o overhead_floor tools/overhead_floor.c -lm
 *     mpiexec -n 5 ./overhead_floor [--iterations N] [--wait sleep|yield] [--yield-us US]
 */
#include <math.h>
#include <mpi.h>
#include <poll.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { D = 100, ROWS = 1000, TESTS = 3, MAX_RANKS = 256, MODEL = 0, REPLY = 1, STOP = 2 };

static int bell;
static int yield_core;
static double yield_window, wait_from; /* --yield-us: seconds of a wait spent yielding before it sleeps */
static struct sockaddr_un names[MAX_RANKS];
static socklen_t name_lengths[MAX_RANKS];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void name_rank(int rank, unsigned job) {
    memset(&names[rank], 0, sizeof names[rank]);
    names[rank].sun_family = AF_UNIX;
    int n = snprintf(names[rank].sun_path + 1, sizeof names[rank].sun_path - 1, "gdcode-floor-%u-%d", job, rank);
    name_lengths[rank] = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static void ring(int rank) {
    char byte = 0;
    sendto(bell, &byte, 1, MSG_DONTWAIT, (struct sockaddr *)&names[rank], name_lengths[rank]);
}

static void drain(void) {
    char bytes[64];
    while (recv(bell, bytes, sizeof bytes, MSG_DONTWAIT) > 0) {
    }
}

static void wait_once(void) {
    if (yield_core || now() - wait_from < yield_window) {
        sched_yield();
    } else {
        struct pollfd p = {bell, POLLIN, 0};
        poll(&p, 1, 20);
    }
    drain();
}

static void coordinator(int W, int iterations) {
    double w[D] = {0}, (*replies)[D] = malloc(sizeof *replies * (size_t)W);
    MPI_Request recvs[MAX_RANKS], sends[MAX_RANKS];
    int which[MAX_RANKS], came;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = now();
    for (int t = 0; t < iterations; t++) {
        for (int i = 0; i < W; i++) MPI_Irecv(replies[i], D, MPI_DOUBLE, i + 1, REPLY, MPI_COMM_WORLD, &recvs[i]);
        for (int i = 0; i < W; i++) MPI_Isend(w, D, MPI_DOUBLE, i + 1, MODEL, MPI_COMM_WORLD, &sends[i]);
        for (int i = 0; i < W; i++) ring(i + 1);
        wait_from = now();
        for (int done = 0; done < W;) {
            drain();
            int any = 0;
            for (int k = 0; k < TESTS && done < W; k++) {
                MPI_Testsome(W, recvs, &came, which, MPI_STATUSES_IGNORE);
                if (came != MPI_UNDEFINED && came > 0) {
                    done += came;
                    any = 1;
                }
            }
            if (!any && done < W) wait_once();
        }
        MPI_Waitall(W, sends, MPI_STATUSES_IGNORE);
        for (int i = 0; i < W; i++)
            for (int j = 0; j < D; j++) w[j] -= 1e-6 * replies[i][j];
    }
    double elapsed = (now() - t0) / iterations;
    for (int i = 0; i < W; i++) {
        MPI_Send(w, D, MPI_DOUBLE, i + 1, STOP, MPI_COMM_WORLD);
        ring(i + 1);
    }
    double mine = 0.0, *compute = malloc(sizeof(double) * (size_t)(W + 1)), slowest = 0.0;
    MPI_Gather(&mine, 1, MPI_DOUBLE, compute, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    for (int i = 1; i <= W; i++) slowest = compute[i] > slowest ? compute[i] : slowest;
    printf("c W=%d wait=%s yield-us=%.0f: %.3f ms per iteration, slowest worker's compute %.3f ms, overhead %.3f ms\n", W,
           yield_core ? "yield" : "sleep", yield_window * 1e6, elapsed * 1e3, slowest * 1e3, (elapsed - slowest) * 1e3);
    free(replies);
    free(compute);
}

static void worker(int rank) {
    double *X = malloc(sizeof(double) * ROWS * D), y[ROWS], w[D], grad[D];
    srand((unsigned)rank);
    for (int i = 0; i < ROWS * D; i++) X[i] = rand() / (double)RAND_MAX - 0.5;
    for (int i = 0; i < ROWS; i++) y[i] = rand() % 2;
    MPI_Barrier(MPI_COMM_WORLD);
    double spent = 0.0;
    int n = 0;
    for (;;) {
        drain();
        MPI_Status status;
        for (int flag = 0;;) {
            for (int k = 0; k < TESTS && !flag; k++) MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &status);
            if (flag) break;
            wait_once();
        }
        MPI_Recv(w, D, MPI_DOUBLE, 0, status.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (status.MPI_TAG == STOP) break;
        double c0 = now();
        memset(grad, 0, sizeof grad);
        for (int i = 0; i < ROWS; i++) {
            const double *x = X + (size_t)i * D;
            double z = 0.0;
            for (int j = 0; j < D; j++) z += x[j] * w[j];
            double r = 1.0 / (1.0 + exp(-z)) - y[i];
            for (int j = 0; j < D; j++) grad[j] += r * x[j];
        }
        spent += now() - c0;
        n++;
        MPI_Send(grad, D, MPI_DOUBLE, 0, REPLY, MPI_COMM_WORLD); /* 800 bytes go eagerly */
        ring(0);
        wait_from = now();
    }
    double mean = spent / (n ? n : 1);
    MPI_Gather(&mean, 1, MPI_DOUBLE, NULL, 0, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    free(X);
}

int main(int argc, char **argv) {
    int iterations = 1000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iterations") && i + 1 < argc) {
            iterations = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--wait") && i + 1 < argc && (!strcmp(argv[i + 1], "sleep") || !strcmp(argv[i + 1], "yield"))) {
            yield_core = !strcmp(argv[++i], "yield");
        } else if (!strcmp(argv[i], "--yield-us") && i + 1 < argc) {
            yield_window = 1e-6 * atof(argv[++i]);
        } else {
            fprintf(stderr, "overhead_floor: usage: [--iterations N] [--wait sleep|yield] [--yield-us US]\n");
            return 2;
        }
    }
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size < 2 || size > MAX_RANKS || iterations < 1) {
        if (rank == 0) fprintf(stderr, "overhead_floor: run 2 to %d ranks and at least one iteration\n", MAX_RANKS);
        MPI_Finalize();
        return 2;
    }
    unsigned job = rank == 0 ? (unsigned)getpid() : 0;
    MPI_Bcast(&job, 1, MPI_UNSIGNED, 0, MPI_COMM_WORLD);
    for (int r = 0; r < size; r++) name_rank(r, job);
    bell = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (bell < 0 || bind(bell, (struct sockaddr *)&names[rank], name_lengths[rank]) != 0) {
        perror("overhead_floor: doorbell");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (rank == 0) coordinator(size - 1, iterations);
    else worker(rank);
    close(bell);
    MPI_Finalize();
    return 0;
}
