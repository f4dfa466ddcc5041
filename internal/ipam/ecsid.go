package ipam

import bolt "go.etcd.io/bbolt"

// The ECS agent's IPAM configs carry an "id" (the task ENI's MAC) that keys
// an allocation instead of its CNI attachment (see Owner.key), and the agent
// allocates through its bridge's network but releases through a network
// named "ecs-ipam". So the store remembers, for each such id, the network
// it was allocated in, and a release finds it there. This file is all the
// store knows of that case; the rest of it keys owners without asking why.
//
// The bucket's slash keeps it apart from network names, which cannot
// contain one.
var bucketECSIDs = []byte("vpc-ipam/ecs-ids")

// rememberECSID records the network an owner with an ECS id allocated in,
// in the allocation's transaction.
func rememberECSID(tx *bolt.Tx, o Owner, network string) error {
	if o.ID == "" {
		return nil
	}
	ids, err := tx.CreateBucketIfNotExists(bucketECSIDs)
	if err != nil {
		return err
	}
	return ids.Put([]byte(o.ID), []byte(network))
}

// ecsNetwork is the network to release an owner from: the one its ECS id
// was allocated in, when it has one and it is known, else network.
func ecsNetwork(tx *bolt.Tx, o Owner, network string) string {
	if o.ID == "" {
		return network
	}
	if ids := tx.Bucket(bucketECSIDs); ids != nil {
		if n := ids.Get([]byte(o.ID)); n != nil {
			return string(n)
		}
	}
	return network
}

// forgetECSID drops the record of an owner's ECS id once its allocation in
// that network is released.
func forgetECSID(tx *bolt.Tx, o Owner, network string) error {
	if o.ID == "" {
		return nil
	}
	if ids := tx.Bucket(bucketECSIDs); ids != nil && string(ids.Get([]byte(o.ID))) == network {
		return ids.Delete([]byte(o.ID))
	}
	return nil
}
