package store

// SetSweepSizes makes a Bolt's sweep visit scan keys per read transaction
// and delete batch per write transaction, and tell done of each batch.
func SetSweepSizes(b *Bolt, scan, batch int, done func(deleted int)) {
	b.sweepScan, b.sweepBatch, b.sweepBatchDone = scan, batch, done
}
