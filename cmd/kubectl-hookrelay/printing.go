package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/pkg/dispatcherapi"
)

// Kinds of the dispatcher's records as -o json|yaml|name shows them. They
// are not served by the API server: the kind and metadata.name only let
// kubectl's printers (and jq scripts written for kubectl) handle them.
const (
	kindDelivery = "Delivery"
	kindEventLog = "EventLog"
)

// wide is -o wide: the table with its priority-1 columns.
const wide = "wide"

// Column types of a metav1.Table.
const (
	columnString  = "string"
	columnInteger = "integer"
)

// output prints with kubectl's printers: -o json|yaml|name|jsonpath|...
// through PrintFlags, the default table and -o wide through the table
// printer.
type output struct {
	flags *genericclioptions.PrintFlags
}

func newOutput() *output {
	return &output{flags: genericclioptions.NewPrintFlags("")}
}

// bind adds -o, which also takes "wide".
func (o *output) bind(cmd *cobra.Command) {
	o.flags.AddFlags(cmd)
	formats := append([]string{wide}, o.flags.AllowedFormats()...)
	cmd.Flags().Lookup("output").Usage = "Output format. One of: (" + strings.Join(formats, ", ") + ")."
}

// print writes list in the chosen format; table builds the human-readable
// form, and is not called for the machine-readable ones.
func (o *output) print(w io.Writer, list runtime.Object, table func() *metav1.Table) error {
	format := ""
	if o.flags.OutputFormat != nil {
		format = *o.flags.OutputFormat
	}
	if format == "" || format == wide {
		return printers.NewTablePrinter(printers.PrintOptions{Wide: format == wide}).PrintObj(table(), w)
	}
	printer, err := o.flags.ToPrinter()
	if err != nil {
		return err
	}
	return printer.PrintObj(list, w)
}

// record makes a dispatcher record an object kubectl's printers take: its
// own JSON fields, with apiVersion, kind and metadata.name beside them.
func record(kind, namespace, name string, value any) (unstructured.Unstructured, error) {
	data, err := json.Marshal(value)
	if err != nil {
		return unstructured.Unstructured{}, err
	}
	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		return unstructured.Unstructured{}, err
	}
	object := unstructured.Unstructured{Object: fields}
	object.SetAPIVersion(hookrelayv1alpha1.GroupVersion.String())
	object.SetKind(kind)
	object.SetNamespace(namespace)
	object.SetName(name)
	return object, nil
}

// deliveryList is a page of deliveries as a kubectl List.
func deliveryList(namespace string, page dispatcherapi.DeliveryPage) (*unstructured.UnstructuredList, error) {
	list := &unstructured.UnstructuredList{Object: map[string]any{}}
	list.SetAPIVersion("v1")
	list.SetKind("List")
	if page.Continue != "" {
		list.SetContinue(page.Continue)
	}
	for _, d := range page.Deliveries {
		item, err := record(kindDelivery, namespace, d.ID, d)
		if err != nil {
			return nil, err
		}
		list.Items = append(list.Items, item)
	}
	return list, nil
}

// deliveryTable is a page of deliveries as kubectl prints a table; the
// wide-only columns have priority 1.
func deliveryTable(page dispatcherapi.DeliveryPage, now time.Time) *metav1.Table {
	table := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Delivery", Type: columnString}, {Name: "Event", Type: columnString}, {Name: "State", Type: columnString},
		{Name: "Attempts", Type: columnInteger}, {Name: "Created", Type: columnString}, {Name: "Updated", Type: columnString},
		{Name: "Next Attempt", Type: columnString, Priority: 1}, {Name: "Interrupted", Type: columnInteger, Priority: 1},
	}}
	for _, d := range page.Deliveries {
		next := "-"
		if d.State == dispatcherapi.Pending {
			next = until(d.NextAttemptAt, now)
		}
		table.Rows = append(table.Rows, metav1.TableRow{Cells: []any{
			d.ID, d.EventID, string(d.State), d.Attempts, ago(d.CreatedAt, now), ago(d.UpdatedAt, now), next, d.Interrupted,
		}})
	}
	return table
}

// ago is how long before now t was, "-" for none.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

// until is how long after now t is, "-" for none.
func until(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if !t.After(now) {
		return "due"
	}
	return fmt.Sprintf("in %s", t.Sub(now).Round(time.Second))
}
