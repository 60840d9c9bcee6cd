// Package celenv is the one CEL environment of Hookrelay: subscription
// filters and payload transforms are compiled here by the controllers (to
// validate them) and by the dispatcher (to evaluate them).
//
// Variables: event (id, type, created_at, data, sandbox) and, for transforms,
// endpoint (name, namespace, url).
//
// An expression is a tenant's input that the shared dispatcher runs, so every
// evaluation is bounded three ways: statically (CompileFilter and
// CompileTransform refuse an expression whose estimated cost, with the
// largest inputs ingest admits, is over MaxEstimatedCost), by the run-time
// cost limit (RuntimeCostLimit), and before any allocation that can grow
// faster than the cost tracker sees it (MaxStringBytes, MaxResultBytes), in
// EvalTimeout.
package celenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	// MaxEstimatedCost is the largest estimated worst-case cost, in CEL cost
	// units (about one cheap operation, or ten bytes compared or copied), of
	// a filter or transform that CompileFilter and CompileTransform accept.
	// It is Kubernetes' per-expression limit for CRD validation rules
	// (StaticEstimatedCostLimit).
	MaxEstimatedCost = 10_000_000

	// RuntimeCostLimit bounds the actual cost, in CEL cost units, of one
	// evaluation; past it the evaluation stops with an error. It is
	// Kubernetes' per-expression run-time limit (PerCallLimit).
	RuntimeCostLimit = 1_000_000

	// MaxStringBytes is the largest string, in bytes, that one call of
	// replace, join or format may build at run time. The call is refused
	// before it allocates: these functions can multiply their inputs' size,
	// and cel-go's cost tracker only sees a result once it exists.
	MaxStringBytes = 1 << 20

	// MaxResultBytes is the largest transform result, in bytes of JSON.
	// The result is measured before it is converted or encoded.
	MaxResultBytes = 1 << 20

	// EvalTimeout bounds the time of one evaluation.
	EvalTimeout = time.Second

	// interruptCheckFrequency is how many comprehension iterations run
	// between two checks of the evaluation's deadline.
	interruptCheckFrequency = 100
)

// Size hints for the static estimator: the largest inputs the dispatcher
// admits. They mirror the CRDs' and ingest's limits.
const (
	// EventDataMaxBytes is the dispatcher's default cap on an event body
	// (--max-body-bytes); a string in event data is at most that long, and a
	// list or map in it has at most that many entries.
	EventDataMaxBytes = 256 << 10
	// eventFieldMaxBytes bounds event.id and event.type (ingest refuses
	// longer ones) and event.created_at.
	eventFieldMaxBytes = 253
	// endpointURLMaxBytes is spec.url's maxLength.
	endpointURLMaxBytes = 2048
	// endpointNameMaxBytes bounds endpoint.name and endpoint.namespace.
	endpointNameMaxBytes = 253
)

// The variables an expression sees: the event, and (in templates) the
// endpoint it goes to.
const (
	variableEvent    = "event"
	variableEndpoint = "endpoint"
)

// baseOptions declare the variables and libraries, without the guards.
func baseOptions() []cel.EnvOption {
	return []cel.EnvOption{
		cel.Variable(variableEvent, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(variableEndpoint, cel.MapType(cel.StringType, cel.DynType)),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Encoders(),
		ext.Lists(),
	}
}

var environment = sync.OnceValues(func() (*cel.Env, error) {
	base, err := cel.NewEnv(baseOptions()...)
	if err != nil {
		return nil, err
	}
	guards, err := sizeGuards(base)
	if err != nil {
		return nil, err
	}
	return base.Extend(guards...)
})

// Filter is a compiled subscription filter.
type Filter struct{ program cel.Program }

// Transform is a compiled payload transform.
type Transform struct{ program cel.Program }

// compiled remembers compile results by expression: the routes compiler and
// the dispatcher compile the same few expressions over and over.
var compiled = struct {
	sync.Mutex
	results map[compileKey]compileResult
}{results: map[compileKey]compileResult{}}

type compileKey struct {
	expression string
	kind       kind
	checkCost  bool
}

type kind int

const (
	filterKind kind = iota
	transformKind
)

// compiledLimit bounds the memo; past it, the memo starts over.
const compiledLimit = 10_000

type compileResult struct {
	program cel.Program
	err     error
}

func memo(key compileKey) (cel.Program, error) {
	compiled.Lock()
	result, ok := compiled.results[key]
	compiled.Unlock()
	if ok {
		return result.program, result.err
	}
	program, err := compile(key)
	compiled.Lock()
	if len(compiled.results) >= compiledLimit {
		clear(compiled.results)
	}
	compiled.results[key] = compileResult{program, err}
	compiled.Unlock()
	return program, err
}

// CompileFilter compiles a boolean expression over event, and refuses it if
// its estimated cost is over MaxEstimatedCost. The error carries the
// compiler's message or the estimate and the budget.
func CompileFilter(expression string) (*Filter, error) {
	program, err := memo(compileKey{expression, filterKind, true})
	if err != nil {
		return nil, err
	}
	return &Filter{program: program}, nil
}

// CompileTransform compiles an expression over event and endpoint whose
// result becomes the JSON body, and refuses it if its estimated cost is over
// MaxEstimatedCost.
func CompileTransform(expression string) (*Transform, error) {
	program, err := memo(compileKey{expression, transformKind, true})
	if err != nil {
		return nil, err
	}
	return &Transform{program: program}, nil
}

// LoadFilter compiles a filter that the controllers already checked, without
// the static cost check: the dispatcher evaluates what was published under
// the run-time bounds alone, so that a route published before a budget
// change, or written by hand, fails its own deliveries rather than dropping
// out of the routing table.
func LoadFilter(expression string) (*Filter, error) {
	program, err := memo(compileKey{expression, filterKind, false})
	if err != nil {
		return nil, err
	}
	return &Filter{program: program}, nil
}

// LoadTransform is LoadFilter for transforms.
func LoadTransform(expression string) (*Transform, error) {
	program, err := memo(compileKey{expression, transformKind, false})
	if err != nil {
		return nil, err
	}
	return &Transform{program: program}, nil
}

func compile(key compileKey) (cel.Program, error) {
	env, err := environment()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	ast, issues := env.Compile(key.expression)
	if issues.Err() != nil {
		return nil, issues.Err()
	}
	switch t := ast.OutputType(); key.kind {
	case filterKind:
		if !t.IsExactType(types.BoolType) && !t.IsExactType(types.DynType) {
			return nil, fmt.Errorf("expression gives %s, want bool", t)
		}
	case transformKind:
		switch t.Kind() {
		case types.MapKind, types.ListKind, types.DynKind:
		default:
			return nil, fmt.Errorf("expression gives %s, want map or list", t)
		}
	}
	if key.checkCost {
		if err := checkCost(env, ast); err != nil {
			return nil, err
		}
	}
	return env.Program(ast,
		cel.CostLimit(RuntimeCostLimit),
		cel.InterruptCheckFrequency(interruptCheckFrequency),
		cel.EvalOptions(cel.OptOptimize))
}

// checkCost refuses an expression whose estimated worst-case cost, on the
// largest inputs the dispatcher admits, is over MaxEstimatedCost.
func checkCost(env *cel.Env, ast *cel.Ast) error {
	estimate, err := env.EstimateCost(ast, sizeHints{})
	if err != nil {
		return fmt.Errorf("estimating the cost: %w", err)
	}
	if estimate.Max > MaxEstimatedCost {
		return fmt.Errorf("estimated cost %d exceeds the budget of %d CEL cost units (with event data of up to %d bytes); "+
			"simplify the expression, for example avoid replace, join or format on large inputs",
			estimate.Max, MaxEstimatedCost, EventDataMaxBytes)
	}
	return nil
}

// sizeHints tells the estimator how large the variables can be.
type sizeHints struct{}

func (sizeHints) EstimateSize(node checker.AstNode) *checker.SizeEstimate {
	path := node.Path()
	if len(path) == 0 {
		return nil
	}
	limit := uint64(0)
	switch path[0] {
	case variableEvent:
		limit = EventDataMaxBytes
		if len(path) == 2 && (path[1] == "id" || path[1] == "type" || path[1] == "created_at") {
			limit = eventFieldMaxBytes
		}
	case variableEndpoint:
		limit = endpointNameMaxBytes
		if len(path) == 2 && path[1] == "url" {
			limit = endpointURLMaxBytes
		}
	default:
		return nil
	}
	return &checker.SizeEstimate{Min: 0, Max: limit}
}

func (sizeHints) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// Match evaluates the filter on an event (its envelope as a map).
func (f *Filter) Match(event map[string]any) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), EvalTimeout)
	defer cancel()
	return f.match(ctx, event)
}

func (f *Filter) match(ctx context.Context, event map[string]any) (bool, error) {
	out, _, err := f.program.ContextEval(ctx, map[string]any{variableEvent: event})
	if err != nil {
		return false, fmt.Errorf("filter: %w", evalError(ctx, err))
	}
	matched, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("filter gave %s, want bool", out.Type())
	}
	return matched, nil
}

// Apply evaluates the transform and returns a value ready for json.Marshal.
func (t *Transform) Apply(event, endpoint map[string]any) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), EvalTimeout)
	defer cancel()
	return t.apply(ctx, event, endpoint)
}

// Body evaluates the transform and encodes its result as JSON, at most
// MaxResultBytes.
func (t *Transform) Body(event, endpoint map[string]any) ([]byte, error) {
	value, err := t.Apply(event, endpoint)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("transform result is not JSON: %w", err)
	}
	if len(body) > MaxResultBytes {
		// Escaping can make the JSON a few times larger than the measure.
		return nil, fmt.Errorf("transform result is %d bytes of JSON, over the limit of %d", len(body), MaxResultBytes)
	}
	return body, nil
}

func (t *Transform) apply(ctx context.Context, event, endpoint map[string]any) (any, error) {
	out, _, err := t.program.ContextEval(ctx, map[string]any{variableEvent: event, variableEndpoint: endpoint})
	if err != nil {
		return nil, fmt.Errorf("transform: %w", evalError(ctx, err))
	}
	if size, ok := boundedSize(out, MaxResultBytes); !ok {
		return nil, fmt.Errorf("transform result is over the limit of %d bytes (at least %d)", MaxResultBytes, size)
	}
	return native(out)
}

// evalError says plainly that an evaluation ran out of time.
func evalError(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("evaluation took longer than %s: %w", EvalTimeout, err)
	}
	return err
}

// native turns a CEL value into plain Go maps, slices and scalars.
func native(v ref.Val) (any, error) {
	value, err := v.ConvertToNative(reflect.TypeFor[*structpb.Value]())
	if err != nil {
		return nil, fmt.Errorf("transform result is not JSON: %w", err)
	}
	return value.(*structpb.Value).AsInterface(), nil
}
