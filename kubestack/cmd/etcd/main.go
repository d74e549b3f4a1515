// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3/etcdmain), built at the
// version the pinned Kubernetes release requires, for meshcheck's sandbox target.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
