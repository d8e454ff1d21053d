/*
 * c_listener.c - the C floor of an exit listener, for benchmarks/observer_cost.py.
 *
 * Usage: c_listener FAMILY_ID CPULIST
 *
 * Registers one NETLINK_GENERIC socket (16 MiB receive buffer) as the TASKSTATS
 * exit listener of every CPU in CPULIST, then blocks in recv() and, for every
 * datagram, checks each message's header (length, type = FAMILY_ID, generic
 * netlink command NEW), walks its attributes to the AGGR_PID / AGGR_TGID nests and
 * reads each STATS struct's version (kept in a checksum so the compiler cannot drop
 * the work).  It prints nothing per exit: what it costs is the floor of receiving
 * and validating.  An overrun (ENOBUFS) is counted.  On SIGTERM or SIGINT it
 * deregisters and prints one line, its CPU from getrusage(RUSAGE_SELF):
 *
 *   tasks=<n> groups=<n> datagrams=<n> overruns=<n> bad=<n> utime_us=<n> stime_us=<n> check=<n>
 *
 * "ready" is printed on stdout once the registration is acknowledged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define RECV_BUFFER 65536
#define CMD_GET 1
#define CMD_NEW 2
#define ATTR_REGISTER_CPUMASK 3
#define ATTR_DEREGISTER_CPUMASK 4
#define TYPE_STATS 3
#define TYPE_AGGR_PID 4
#define TYPE_AGGR_TGID 5
#ifndef SO_RCVBUFFORCE
#define SO_RCVBUFFORCE 33
#endif

static unsigned char rbuf[RECV_BUFFER] __attribute__((aligned(8)));
static volatile sig_atomic_t stop;
static long n_tasks, n_groups, n_datagrams, n_overruns, n_bad;
static unsigned long check;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* Send a (de)register request for `cpus` with an ACK asked; wait for the ACK. */
static int request(int fd, int family, int attr, const char *cpus)
{
	unsigned char msg[512] __attribute__((aligned(8)));
	struct nlmsghdr *nlh = (void *)msg;
	struct genlmsghdr *genl = NLMSG_DATA(nlh);
	struct nlattr *na = (void *)((unsigned char *)genl + GENL_HDRLEN);
	size_t len = strlen(cpus) + 1;

	if (len > sizeof(msg) - 64)
		return -1;
	memset(msg, 0, sizeof(msg));
	na->nla_type = attr;
	na->nla_len = NLA_HDRLEN + len;
	memcpy((unsigned char *)na + NLA_HDRLEN, cpus, len);
	nlh->nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN + NLA_ALIGN(na->nla_len));
	nlh->nlmsg_type = family;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	nlh->nlmsg_seq = 0x7fff0001;
	genl->cmd = CMD_GET;
	genl->version = 1;
	if (send(fd, msg, nlh->nlmsg_len, 0) < 0)
		return -1;
	for (;;) {
		ssize_t n = recv(fd, rbuf, sizeof(rbuf), 0);
		const struct nlmsghdr *r = (const void *)rbuf;

		if (n < 0)
			return -1;
		if (n >= (ssize_t)NLMSG_HDRLEN && r->nlmsg_seq == 0x7fff0001 &&
		    r->nlmsg_type == NLMSG_ERROR) {
			const struct nlmsgerr *e = NLMSG_DATA(r);

			errno = -e->error;
			return e->error ? -1 : 0;
		}
	}
}

/* Count the STATS structs inside one AGGR nest [p, end). */
static int nest(const unsigned char *p, const unsigned char *end)
{
	int found = 0;

	while (end - p >= (long)NLA_HDRLEN) {
		const struct nlattr *a = (const void *)p;

		if (a->nla_len < NLA_HDRLEN || p + a->nla_len > end)
			return -1;
		if ((a->nla_type & NLA_TYPE_MASK) == TYPE_STATS && a->nla_len >= NLA_HDRLEN + 2) {
			check += *(const uint16_t *)(p + NLA_HDRLEN);
			found = 1;
		}
		p += NLA_ALIGN(a->nla_len);
	}
	return found;
}

/* Validate one message; count its task and group records. */
static void message(const struct nlmsghdr *nlh, int family)
{
	const unsigned char *p = (const unsigned char *)NLMSG_DATA(nlh) + GENL_HDRLEN;
	const unsigned char *end = (const unsigned char *)nlh + nlh->nlmsg_len;
	const struct genlmsghdr *genl = NLMSG_DATA(nlh);

	if (nlh->nlmsg_type != family || nlh->nlmsg_len < NLMSG_LENGTH(GENL_HDRLEN) ||
	    genl->cmd != CMD_NEW) {
		n_bad++;
		return;
	}
	while (end - p >= (long)NLA_HDRLEN) {
		const struct nlattr *a = (const void *)p;
		int type = a->nla_type & NLA_TYPE_MASK;

		if (a->nla_len < NLA_HDRLEN || p + a->nla_len > end) {
			n_bad++;
			return;
		}
		if (type == TYPE_AGGR_PID || type == TYPE_AGGR_TGID) {
			int ok = nest(p + NLA_HDRLEN, p + a->nla_len);

			if (ok < 0)
				n_bad++;
			else if (ok && type == TYPE_AGGR_PID)
				n_tasks++;
			else if (ok)
				n_groups++;
		}
		p += NLA_ALIGN(a->nla_len);
	}
}

static void datagram(ssize_t n, int family)
{
	const struct nlmsghdr *nlh = (const void *)rbuf;
	int left = (int)n;

	n_datagrams++;
	while (NLMSG_OK(nlh, left)) {
		message(nlh, family);
		nlh = NLMSG_NEXT(nlh, left);
	}
	if (left > 0)
		n_bad++;
}

int main(int argc, char **argv)
{
	struct sockaddr_nl addr = {.nl_family = AF_NETLINK};
	struct sigaction sa = {.sa_handler = on_signal};
	struct rusage ru;
	int rcvbuf = 16 << 20, family, fd;

	if (argc != 3) {
		fprintf(stderr, "usage: c_listener FAMILY_ID CPULIST\n");
		return 2;
	}
	family = atoi(argv[1]);
	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("c_listener: socket");
		return 1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (request(fd, family, ATTR_REGISTER_CPUMASK, argv[2]) < 0) {
		perror("c_listener: register");
		return 1;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);  /* no SA_RESTART: recv() returns EINTR */
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		ssize_t n = recv(fd, rbuf, sizeof(rbuf), 0);

		if (n >= 0)
			datagram(n, family);
		else if (errno == ENOBUFS)
			n_overruns++;
		else if (errno != EINTR) {
			perror("c_listener: recv");
			return 1;
		}
	}
	getrusage(RUSAGE_SELF, &ru);
	request(fd, family, ATTR_DEREGISTER_CPUMASK, argv[2]);
	printf("tasks=%ld groups=%ld datagrams=%ld overruns=%ld bad=%ld utime_us=%ld "
	       "stime_us=%ld check=%lu\n", n_tasks, n_groups, n_datagrams, n_overruns, n_bad,
	       (long)(ru.ru_utime.tv_sec * 1000000L + ru.ru_utime.tv_usec),
	       (long)(ru.ru_stime.tv_sec * 1000000L + ru.ru_stime.tv_usec), check);
	return 0;
}
