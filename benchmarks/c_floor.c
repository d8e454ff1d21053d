/*
 * c_floor.c - the C floor of a taskstats scan, for benchmarks/scan.py.
 *
 * Usage: c_floor FAMILY_ID REPEAT [WINDOW] < pids
 *
 * Reads whitespace-separated task ids from stdin and queries each one REPEAT
 * times over with TASKSTATS_CMD_GET (TASKSTATS_CMD_ATTR_PID).
 *
 *   WINDOW = 1 (default): the floor proper, one request per round trip:
 *       send(), recv() into a 64 KiB buffer, check the header, locate STATS.
 *   WINDOW > 1: informational; WINDOW requests in one send(), then WINDOW
 *       recv()s (the syscall pattern of a pipelined client).
 *
 * Nothing is decoded beyond locating the STATS attribute and reading its
 * version (kept in a checksum so the compiler cannot drop the work).  Only the
 * query loop is timed (CLOCK_MONOTONIC); process start-up and reading the pid
 * list are not.  Prints one line:
 *
 *   ns_per_task=<f> queries=<n> ok=<n> esrch=<n> other_err=<n> check=<n>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RECV_BUFFER 65536
#define CMD_GET 1
#define CMD_ATTR_PID 1
#define TYPE_STATS 3
#define TYPE_AGGR_PID 4
#define MAX_WINDOW 1024
#ifndef SO_RCVBUFFORCE
#define SO_RCVBUFFORCE 33
#endif

struct get_request {
	struct nlmsghdr nlh;
	struct genlmsghdr genl;
	struct nlattr nla;
	uint32_t pid;
};

static unsigned char rbuf[RECV_BUFFER] __attribute__((aligned(8)));
static struct get_request reqs[MAX_WINDOW];

static long n_ok, n_esrch, n_other;
static unsigned long check;

static int read_pids(uint32_t **out)
{
	size_t cap = 1024, n = 0;
	uint32_t *v = malloc(cap * sizeof(*v));
	unsigned long x;

	if (!v)
		return -1;
	while (scanf("%lu", &x) == 1) {
		if (n == cap) {
			uint32_t *w;

			cap *= 2;
			w = realloc(v, cap * sizeof(*v));
			if (!w) {
				free(v);
				return -1;
			}
			v = w;
		}
		v[n++] = (uint32_t)x;
	}
	*out = v;
	return (int)n;
}

/* Walk the attributes in [p, end): return the payload of the first of type
 * `want` (type masked with NLA_TYPE_MASK), or NULL. */
static const unsigned char *find_attr(const unsigned char *p, const unsigned char *end,
				      int want, unsigned *len)
{
	while (end - p >= (long)NLA_HDRLEN) {
		const struct nlattr *a = (const void *)p;

		if (a->nla_len < NLA_HDRLEN || p + a->nla_len > end)
			return NULL;
		if ((a->nla_type & NLA_TYPE_MASK) == want) {
			*len = a->nla_len - NLA_HDRLEN;
			return p + NLA_HDRLEN;
		}
		p += NLA_ALIGN(a->nla_len);
	}
	return NULL;
}

/* Check one datagram; return 0 when it answered `seq`, -1 otherwise. */
static int handle(ssize_t n, int family, uint32_t seq)
{
	const struct nlmsghdr *nlh = (const void *)rbuf;
	const unsigned char *end, *aggr, *stats;
	unsigned alen, slen;

	if (n < (ssize_t)sizeof(*nlh) || nlh->nlmsg_len > (size_t)n ||
	    nlh->nlmsg_len < sizeof(*nlh)) {
		fprintf(stderr, "c_floor: short or corrupt datagram (%zd bytes)\n", n);
		exit(2);
	}
	if (nlh->nlmsg_seq != seq)
		return -1;
	if (nlh->nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(nlh);

		if (e->error == -ESRCH)
			n_esrch++;
		else
			n_other++;
		return 0;
	}
	if (nlh->nlmsg_type != family) {
		n_other++;
		return 0;
	}
	end = rbuf + nlh->nlmsg_len;
	aggr = find_attr(rbuf + NLMSG_HDRLEN + GENL_HDRLEN, end, TYPE_AGGR_PID, &alen);
	stats = aggr ? find_attr(aggr, aggr + alen, TYPE_STATS, &slen) : NULL;
	if (!stats || slen < 2) {
		n_other++;
		return 0;
	}
	check += *(const uint16_t *)stats; /* struct taskstats.version */
	n_ok++;
	return 0;
}

static void recv_answer(int fd, int family, uint32_t seq)
{
	for (;;) {
		ssize_t n = recv(fd, rbuf, sizeof(rbuf), 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("c_floor: recv");
			exit(2);
		}
		if (handle(n, family, seq) == 0)
			return;
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	int family, repeat, window = 1, npids, fd, rcvbuf = 1 << 20;
	uint32_t *pids, seq = 0;
	struct timespec t0, t1;
	long queries = 0;
	double ns;

	if (argc < 3) {
		fprintf(stderr, "usage: %s FAMILY_ID REPEAT [WINDOW] < pids\n", argv[0]);
		return 2;
	}
	family = atoi(argv[1]);
	repeat = atoi(argv[2]);
	if (argc > 3)
		window = atoi(argv[3]);
	if (window < 1 || window > MAX_WINDOW || repeat < 1) {
		fprintf(stderr, "c_floor: bad REPEAT or WINDOW\n");
		return 2;
	}
	npids = read_pids(&pids);
	if (npids <= 0) {
		fprintf(stderr, "c_floor: no pids on stdin\n");
		return 2;
	}

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("c_floor: netlink socket");
		return 2;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));

	for (int k = 0; k < MAX_WINDOW; k++) {
		reqs[k].nlh.nlmsg_len = sizeof(struct get_request);
		reqs[k].nlh.nlmsg_type = (uint16_t)family;
		reqs[k].nlh.nlmsg_flags = NLM_F_REQUEST;
		reqs[k].genl.cmd = CMD_GET;
		reqs[k].genl.version = 1;
		reqs[k].nla.nla_len = NLA_HDRLEN + sizeof(uint32_t);
		reqs[k].nla.nla_type = CMD_ATTR_PID;
	}

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int r = 0; r < repeat; r++) {
		for (int i = 0; i < npids; i += window) {
			int m = npids - i < window ? npids - i : window;
			uint32_t first = seq + 1;

			for (int k = 0; k < m; k++) {
				reqs[k].nlh.nlmsg_seq = ++seq;
				reqs[k].pid = pids[i + k];
			}
			if (send(fd, reqs, (size_t)m * sizeof(struct get_request), 0) < 0) {
				perror("c_floor: send");
				return 2;
			}
			for (int k = 0; k < m; k++)
				recv_answer(fd, family, first + (uint32_t)k);
			queries += m;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);

	ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
	printf("ns_per_task=%.1f queries=%ld ok=%ld esrch=%ld other_err=%ld check=%lu\n",
	       ns / (double)queries, queries, n_ok, n_esrch, n_other, check);
	close(fd);
	free(pids);
	return 0;
}
