// Package celenv is the one CEL environment of Hookrelay: subscription
// filters and payload transforms are compiled here by the controllers (to
// validate them) and by the dispatcher (to evaluate them).
//
// Variables: event (id, type, created_at, data, sandbox) and, for transforms,
// endpoint (name, namespace, url).
package celenv

import (
	"fmt"
	"reflect"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	"google.golang.org/protobuf/types/known/structpb"
)

var environment = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("endpoint", cel.MapType(cel.StringType, cel.DynType)),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Encoders(),
		ext.Lists(),
	)
})

// costLimit bounds the work of one evaluation, so that a pathological
// expression cannot stall delivery.
const costLimit = 1_000_000

// Filter is a compiled subscription filter.
type Filter struct{ program cel.Program }

// Transform is a compiled payload transform.
type Transform struct{ program cel.Program }

// compiled remembers compile results by expression: the routes compiler and
// the dispatcher compile the same few expressions over and over.
var compiled = struct {
	sync.Mutex
	filters    map[string]compileResult[*Filter]
	transforms map[string]compileResult[*Transform]
}{filters: map[string]compileResult[*Filter]{}, transforms: map[string]compileResult[*Transform]{}}

// compiledLimit bounds the memo; past it, the memo starts over.
const compiledLimit = 10_000

type compileResult[T any] struct {
	value T
	err   error
}

func memo[T any](results map[string]compileResult[T], expression string, compileFn func(string) (T, error)) (T, error) {
	compiled.Lock()
	result, ok := results[expression]
	compiled.Unlock()
	if ok {
		return result.value, result.err
	}
	value, err := compileFn(expression)
	compiled.Lock()
	if len(results) >= compiledLimit {
		clear(results)
	}
	results[expression] = compileResult[T]{value, err}
	compiled.Unlock()
	return value, err
}

// CompileFilter compiles a boolean expression over event. The error carries
// the compiler's message.
func CompileFilter(expression string) (*Filter, error) {
	return memo(compiled.filters, expression, compileFilter)
}

// CompileTransform compiles an expression over event and endpoint whose
// result becomes the JSON body.
func CompileTransform(expression string) (*Transform, error) {
	return memo(compiled.transforms, expression, compileTransform)
}

func compileFilter(expression string) (*Filter, error) {
	program, err := compile(expression, func(t *cel.Type) bool {
		return t.IsExactType(types.BoolType) || t.IsExactType(types.DynType)
	}, "bool")
	if err != nil {
		return nil, err
	}
	return &Filter{program: program}, nil
}

func compileTransform(expression string) (*Transform, error) {
	program, err := compile(expression, func(t *cel.Type) bool {
		switch t.Kind() {
		case types.MapKind, types.ListKind, types.DynKind:
			return true
		}
		return false
	}, "map or list")
	if err != nil {
		return nil, err
	}
	return &Transform{program: program}, nil
}

func compile(expression string, acceptable func(*cel.Type) bool, want string) (cel.Program, error) {
	env, err := environment()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	ast, issues := env.Compile(expression)
	if issues.Err() != nil {
		return nil, issues.Err()
	}
	if !acceptable(ast.OutputType()) {
		return nil, fmt.Errorf("expression gives %s, want %s", ast.OutputType(), want)
	}
	return env.Program(ast, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
}

// Match evaluates the filter on an event (its envelope as a map).
func (f *Filter) Match(event map[string]any) (bool, error) {
	out, _, err := f.program.Eval(map[string]any{"event": event})
	if err != nil {
		return false, fmt.Errorf("filter: %w", err)
	}
	matched, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("filter gave %s, want bool", out.Type())
	}
	return matched, nil
}

// Apply evaluates the transform and returns a value ready for json.Marshal.
func (t *Transform) Apply(event, endpoint map[string]any) (any, error) {
	out, _, err := t.program.Eval(map[string]any{"event": event, "endpoint": endpoint})
	if err != nil {
		return nil, fmt.Errorf("transform: %w", err)
	}
	return native(out)
}

// native turns a CEL value into plain Go maps, slices and scalars.
func native(v ref.Val) (any, error) {
	value, err := v.ConvertToNative(reflect.TypeFor[*structpb.Value]())
	if err != nil {
		return nil, fmt.Errorf("transform result is not JSON: %w", err)
	}
	return value.(*structpb.Value).AsInterface(), nil
}
