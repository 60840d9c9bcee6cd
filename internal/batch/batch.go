// Package batch gathers what waits on a channel into groups, so that one
// transaction (and one fsync) serves many writers.
package batch

// Each calls handle with groups of the items received on ch: the first item
// that arrives and every one already waiting behind it, at most max. It
// returns once ch is closed and drained. The slice is reused between calls.
func Each[T any](ch <-chan T, max int, handle func([]T)) {
	group := make([]T, 0, max)
	for first := range ch {
		group = append(group[:0], first)
	gather:
		for len(group) < max {
			select {
			case next, ok := <-ch:
				if !ok {
					break gather
				}
				group = append(group, next)
			default:
				break gather
			}
		}
		handle(group)
	}
}
