/*
 * A static kexec_load(2) loader for realkernel guests whose architecture the host's Python
 * cannot run in (tests/test_realkernel_ppc64.py). It loads a kimagekit image as
 * `kimagekit load` would, from a flat description written on the host:
 *
 *     entry ENTRY
 *     segment FILE-OFFSET BUFSZ MEM MEMSZ      (one line per segment, in image order)
 *
 * (numbers as strtoull base 0 reads them), then reboots into it.
 *
 *     kexec_loader IMAGE DESCRIPTION [exec]
 *
 * Prints "kexec_load rc=0", or rc=-1 and the errno, on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kexec.h>
#include <linux/reboot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <unistd.h>

/* 9p may return fewer bytes than asked */
static int read_at(int fd, char *buf, unsigned long long len, unsigned long long off)
{
	while (len) {
		ssize_t n = pread(fd, buf, len, off);

		if (n <= 0)
			return -1;
		buf += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int fail(const char *what)
{
	printf("kexec_loader: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	struct kexec_segment segs[KEXEC_SEGMENT_MAX];
	unsigned long long entry = 0, off, bufsz, mem, memsz;
	unsigned long nr = 0;
	char line[256], *buf;
	FILE *desc;
	int fd;
	long rc;

	if (argc < 3)
		return 2;
	fd = open(argv[1], O_RDONLY);
	desc = fopen(argv[2], "r");
	if (fd < 0 || !desc)
		return fail("open");
	while (fgets(line, sizeof(line), desc)) {
		if (sscanf(line, "entry %lli", &entry) == 1)
			continue;
		if (sscanf(line, "segment %lli %lli %lli %lli", &off, &bufsz, &mem, &memsz) != 4)
			continue;
		if (nr == KEXEC_SEGMENT_MAX)
			return 2;
		buf = malloc(bufsz ? bufsz : 1);
		if (!buf)
			return fail("malloc");
		if (read_at(fd, buf, bufsz, off))
			return fail("pread");
		segs[nr].buf = buf;
		segs[nr].bufsz = bufsz;
		segs[nr].mem = (void *)mem;
		segs[nr].memsz = memsz;
		nr++;
	}
	rc = syscall(SYS_kexec_load, entry, nr, segs, KEXEC_ARCH_DEFAULT);
	printf("kexec_load rc=%ld%s%s\n", rc, rc ? " " : "", rc ? strerror(errno) : "");
	fflush(stdout);
	if (rc || argc < 4 || strcmp(argv[3], "exec"))
		return rc ? 1 : 0;
	sync();
	reboot(LINUX_REBOOT_CMD_KEXEC);
	return fail("reboot");
}
