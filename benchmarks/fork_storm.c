/*
 * fork_storm.c - the exit generator of benchmarks/exit_storm.py.
 *
 * Usage: fork_storm MAX_FORKS MAX_SECONDS [JOBS]
 *
 * Starts JOBS worker processes (default 1).  Each forks children that _exit(0)
 * at once, as fast as it can, until the workers together made MAX_FORKS
 * children (each does its share) or MAX_SECONDS passed.  SIGCHLD is ignored so
 * the kernel reaps the children; a worker waits until all of its children are
 * gone before it exits, so every child exited while its parent was a worker.
 * When every worker is gone this prints
 *
 *   forks=<n> elapsed_ns=<n> eagain=<n> workers=<pid>,<pid>...
 *
 * and exits.  elapsed_ns runs from the start of the workers to the end of the
 * last one.  exit_storm.py counts the exit records whose ac_ppid is a worker.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_JOBS 64

struct shared {
	long forks[MAX_JOBS];
	long eagain[MAX_JOBS];
};

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void wait_all(void)
{
	/* with SIGCHLD ignored, wait() returns -1/ECHILD once every child is gone */
	while (wait(NULL) > 0 || errno == EINTR)
		;
}

static void worker(struct shared *sh, int job, long quota, long long deadline)
{
	long forks = 0, eagain = 0, loops = 0;

	while (forks < quota) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		if (pid > 0) {
			forks++;
		} else if (errno == EAGAIN) {
			eagain++;
			sched_yield();
		} else {
			perror("fork_storm: fork");
			break;
		}
		if ((++loops & 255) == 0 && now_ns() > deadline)
			break;
	}
	wait_all();
	sh->forks[job] = forks;
	sh->eagain[job] = eagain;
	_exit(0);
}

int main(int argc, char **argv)
{
	long max_forks, forks = 0, eagain = 0;
	long long t0, deadline;
	pid_t workers[MAX_JOBS];
	struct shared *sh;
	int jobs = 1;

	if (argc < 3) {
		fprintf(stderr, "usage: %s MAX_FORKS MAX_SECONDS [JOBS]\n", argv[0]);
		return 2;
	}
	max_forks = atol(argv[1]);
	deadline = (long long)(atof(argv[2]) * 1e9);
	if (argc > 3)
		jobs = atoi(argv[3]);
	if (jobs < 1 || jobs > MAX_JOBS) {
		fprintf(stderr, "fork_storm: JOBS must be 1..%d\n", MAX_JOBS);
		return 2;
	}
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("fork_storm: mmap");
		return 2;
	}
	signal(SIGCHLD, SIG_IGN);
	fflush(stdout);

	t0 = now_ns();
	deadline += t0;
	for (int j = 0; j < jobs; j++) {
		long quota = max_forks / jobs + (j < max_forks % jobs);

		workers[j] = fork();
		if (workers[j] == 0)
			worker(sh, j, quota, deadline);
		if (workers[j] < 0) {
			perror("fork_storm: worker");
			return 2;
		}
	}
	wait_all();
	for (int j = 0; j < jobs; j++) {
		forks += sh->forks[j];
		eagain += sh->eagain[j];
	}
	printf("forks=%ld elapsed_ns=%lld eagain=%ld workers=", forks, now_ns() - t0, eagain);
	for (int j = 0; j < jobs; j++)
		printf("%s%d", j ? "," : "", (int)workers[j]);
	printf("\n");
	return 0;
}
