/*
 * version.h -- the versions cetcd reports.
 *
 * CETCD_VERSION is cetcd's own release. It is what `cetcd --version` prints
 * first.
 *
 * CETCD_ETCD_COMPAT_VERSION is the etcd server version cetcd claims to be
 * wherever a client reads a server version: the Maintenance Status RPC
 * (StatusResponse.version), the /version endpoint ("etcdserver") and the
 * startup log. Clients gate features on it -- etcdctl 3.4 and clientv3 compare
 * it against their own minor version, and `etcdctl endpoint status` prints it
 * -- so it must be a real etcd release whose v3 API cetcd implements, not
 * cetcd's own number. CETCD_API_VERSION is that release's cluster/API
 * version ("3.4"): the /version endpoint's "etcdcluster", and the value of
 * "set the initial cluster version to 3.4" in the startup log.
 */
#ifndef CETCD_ACTORS_VERSION_H
#define CETCD_ACTORS_VERSION_H

#define CETCD_VERSION "0.1.0"
#define CETCD_API_VERSION "3.4"
#define CETCD_ETCD_COMPAT_VERSION "3.4.23"

/* The build may pass -DCETCD_GIT_SHA=\"<sha>\"; etcd prints the same
 * placeholder when it was built without its build script. */
#ifndef CETCD_GIT_SHA
#define CETCD_GIT_SHA "Not provided"
#endif

#endif
