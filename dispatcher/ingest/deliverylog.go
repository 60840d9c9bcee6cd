package ingest

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hookrelay/hookrelay/dispatcher/delivery"
	"github.com/hookrelay/hookrelay/dispatcher/store"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// maxPage bounds a page of deliveries.
const maxPage = 500

// event answers GET .../events/{id}: the event, its deliveries and attempts.
func (h *Handler) event(w http.ResponseWriter, r *http.Request) {
	namespace, id := r.PathValue("namespace"), r.PathValue("id")
	event, err := h.Store.Event(r.Context(), namespace, id)
	if err != nil {
		h.storeError(w, err, fmt.Sprintf("no event %q in namespace %q", id, namespace))
		return
	}
	deliveries, err := h.Store.DeliveriesOf(r.Context(), namespace, id)
	if err != nil {
		h.storeError(w, err, "")
		return
	}
	out := dispatcherapi.EventLog{Event: event, Data: event.Data, Deliveries: make([]dispatcherapi.DeliveryLog, 0, len(deliveries))}
	for _, d := range deliveries {
		attempts, err := h.Store.Attempts(r.Context(), d.ID)
		if err != nil {
			h.storeError(w, err, "")
			return
		}
		out.Deliveries = append(out.Deliveries, dispatcherapi.DeliveryLog{Delivery: d, Attempts: attempts})
	}
	writeJSON(w, http.StatusOK, out)
}

// endpointDeliveries answers GET .../endpoints/{endpoint}/deliveries with
// ?state=pending|held|succeeded|failed, ?since= and ?until= (RFC 3339),
// ?limit= (default 50) and ?continue=.
func (h *Handler) endpointDeliveries(w http.ResponseWriter, r *http.Request) {
	query := store.DeliveryQuery{State: store.State(r.URL.Query().Get("state")), After: r.URL.Query().Get("continue"), Limit: 50}
	switch query.State {
	case "", store.Pending, store.Held, store.Succeeded, store.Failed:
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("state %q is not one of pending, held, succeeded, failed", query.State))
		return
	}
	var err error
	if query.Since, err = queryTime(r, "since"); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if query.Until, err = queryTime(r, "until"); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if limit := r.URL.Query().Get("limit"); limit != "" {
		if query.Limit, err = strconv.Atoi(limit); err != nil || query.Limit < 1 || query.Limit > maxPage {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q is not a number from 1 to %d", limit, maxPage))
			return
		}
	}
	page, next, err := h.Store.EndpointDeliveries(r.Context(), r.PathValue("namespace"), r.PathValue("endpoint"), query)
	if err != nil {
		h.storeError(w, err, "")
		return
	}
	if page == nil {
		page = []store.Delivery{}
	}
	writeJSON(w, http.StatusOK, dispatcherapi.DeliveryPage{Deliveries: page, Continue: next})
}

// retry answers POST .../deliveries/{id}/retry: one more attempt, now.
func (h *Handler) retry(w http.ResponseWriter, r *http.Request) {
	namespace, id := r.PathValue("namespace"), r.PathValue("id")
	d, err := h.Publisher.Retry(r.Context(), namespace, id)
	switch {
	case errors.Is(err, delivery.ErrNotRetriable):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		h.storeError(w, err, fmt.Sprintf("no delivery %q in namespace %q", id, namespace))
	default:
		writeJSON(w, http.StatusAccepted, d)
	}
}

// replay answers POST .../endpoints/{endpoint}/replay?since=: one more
// attempt of each failed delivery created since then.
func (h *Handler) replay(w http.ResponseWriter, r *http.Request) {
	namespace, endpoint := r.PathValue("namespace"), r.PathValue("endpoint")
	since, err := queryTime(r, "since")
	if err == nil && since.IsZero() {
		err = fmt.Errorf("since is required, such as ?since=2026-11-25T10:00:00Z")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	replayed, err := h.Publisher.Replay(r.Context(), namespace, endpoint, since)
	if err != nil {
		h.storeError(w, err, fmt.Sprintf("no WebhookEndpoint %q in namespace %q is published", endpoint, namespace))
		return
	}
	writeJSON(w, http.StatusAccepted, dispatcherapi.ReplayResult{Replayed: replayed})
}

func queryTime(r *http.Request, name string) (time.Time, error) {
	value := r.URL.Query().Get(name)
	if value == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, value)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not an RFC 3339 time such as 2026-11-25T10:00:00Z", name, value)
	}
	return t, nil
}

// storeError answers 404 with notFound for a missing record, else 503.
func (h *Handler) storeError(w http.ResponseWriter, err error, notFound string) {
	if store.IsNotFound(err) && notFound != "" {
		writeError(w, http.StatusNotFound, notFound)
		return
	}
	h.Log.Error(err, "reading the delivery log")
	writeError(w, http.StatusServiceUnavailable, "the delivery log could not be read; try again")
}
