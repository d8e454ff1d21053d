/* A fork storm for the daemon tests: fork N children that exit at once, reaping
 * each, and print how many were forked.  Usage: storm N */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000, done = 0;

	for (long i = 0; i < n; i++) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		if (pid < 0)
			continue;
		waitpid(pid, NULL, 0);
		done++;
	}
	printf("%ld\n", done);
	return done == n ? 0 : 1;
}
