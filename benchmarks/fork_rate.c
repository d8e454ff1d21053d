/* fork_rate - paced exit generator of benchmarks/daemon_load.py.
 *
 * Usage: fork_rate RATE SECONDS
 *
 * Forks RATE children per second (each _exit(0)s at once) for SECONDS, paced
 * with clock_nanosleep(TIMER_ABSTIME) on a fixed schedule.  A fork that comes
 * late is not made up for more than 50 ms later: no long bursts.  SIGCHLD is
 * ignored, so the kernel reaps the children.  Prints
 *
 *   forks=<n> elapsed_ns=<n>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	long long t0, end, next, step;
	double rate, seconds;
	long forks = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: %s RATE SECONDS\n", argv[0]);
		return 2;
	}
	rate = atof(argv[1]);
	seconds = atof(argv[2]);
	if (rate <= 0 || seconds <= 0) {
		fprintf(stderr, "fork_rate: RATE and SECONDS must be positive\n");
		return 2;
	}
	signal(SIGCHLD, SIG_IGN);
	step = (long long)(1e9 / rate);
	t0 = next = now_ns();
	end = t0 + (long long)(seconds * 1e9);
	while (next < end) {
		struct timespec at = { next / 1000000000LL, next % 1000000000LL };
		long long now;
		pid_t pid;

		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR)
			;
		pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid > 0)
			forks++;
		next += step;
		now = now_ns();
		if (now - next > 50000000LL)
			next = now;
	}
	while (wait(NULL) > 0 || errno == EINTR)
		;
	printf("forks=%ld elapsed_ns=%lld\n", forks, now_ns() - t0);
	return 0;
}
