package batch

import (
	"reflect"
	"testing"
)

func TestEachGroupsWhatIsWaiting(t *testing.T) {
	ch := make(chan int, 10)
	for i := range 7 {
		ch <- i
	}
	close(ch)
	var groups [][]int
	Each(ch, 3, func(group []int) { groups = append(groups, append([]int(nil), group...)) })
	if want := [][]int{{0, 1, 2}, {3, 4, 5}, {6}}; !reflect.DeepEqual(groups, want) {
		t.Fatalf("groups = %v, want %v", groups, want)
	}
}
