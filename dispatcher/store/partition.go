package store

import (
	"crypto/md5" //nolint:gosec // a hash to spread endpoints, not a security measure
	"encoding/binary"
)

// Partitions is how many partitions endpoints hash to. A partition is the
// unit of ownership between dispatcher replicas on a shared store: each is
// delivered by one replica at a time. PostgreSQL computes the same number
// (migrations/0002_partitions.sql), so changing it takes a migration.
const Partitions = 64

// Partition returns the partition of the endpoint's deliveries: the first
// four bytes of the MD5 of "<namespace>/<endpoint>", modulo Partitions.
// MD5 because PostgreSQL has it built in, so that both sides agree.
func Partition(namespace, endpoint string) int {
	sum := md5.Sum([]byte(endpointKey(namespace, endpoint))) //nolint:gosec // see above
	return int(binary.BigEndian.Uint32(sum[:4]) % Partitions)
}

// AllPartitions lists every partition, for a store owned by one replica.
func AllPartitions() []int {
	all := make([]int, Partitions)
	for i := range all {
		all[i] = i
	}
	return all
}
