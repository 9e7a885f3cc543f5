/* LD_PRELOAD shim: Orthanc 1.10 has no setting for its HTTP bind address and listens on every
 * interface. For the ports listed in APERTURE_LOOPBACK_PORTS (comma separated) this rewrites
 * bind(0.0.0.0 or ::) to the loopback address, so the REST API is reachable from this host only.
 * Other sockets (the DICOM port for modalities) are left alone. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int port_listed(unsigned short port) {
  const char *list = getenv("APERTURE_LOOPBACK_PORTS");
  if (!list) return 0;
  char buf[256];
  strncpy(buf, list, sizeof buf - 1);
  buf[sizeof buf - 1] = 0;
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
    if (atoi(tok) == port) return 1;
  return 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static int (*real_bind)(int, const struct sockaddr *, socklen_t);
  if (!real_bind) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
  if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
    struct sockaddr_in in4;
    memcpy(&in4, addr, sizeof in4);
    if (in4.sin_addr.s_addr == htonl(INADDR_ANY) && port_listed(ntohs(in4.sin_port))) {
      in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      return real_bind(fd, (const struct sockaddr *)&in4, sizeof in4);
    }
  }
  if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 in6;
    memcpy(&in6, addr, sizeof in6);
    if (memcmp(&in6.sin6_addr, &in6addr_any, sizeof in6.sin6_addr) == 0 && port_listed(ntohs(in6.sin6_port))) {
      in6.sin6_addr = in6addr_loopback;
      return real_bind(fd, (const struct sockaddr *)&in6, sizeof in6);
    }
  }
  return real_bind(fd, addr, len);
}
