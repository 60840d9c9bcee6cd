package celenv

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/functions"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// A sizeCheck returns how many bytes a call would build, computed without
// building it, and whether that is within MaxStringBytes.
type sizeCheck func(args []ref.Val) (int64, bool)

// guarded are the functions whose output can be many times the size of
// their inputs: the cost tracker counts a result only once it is built, so
// one call could allocate gigabytes (”.replace(”, 4,000 bytes) on a string
// of half a MiB) before the cost limit stops the evaluation. Each keeps
// cel-go's implementation, behind a check of the size it would build.
var guarded = map[string]struct {
	function string
	check    sizeCheck
}{
	"string_replace_string_string":     {"replace", func(args []ref.Val) (int64, bool) { return replacedSize(args, -1) }},
	"string_replace_string_string_int": {"replace", func(args []ref.Val) (int64, bool) { return replacedSize(args, int64(args[3].(types.Int))) }},
	"list_join":                        {"join", func(args []ref.Val) (int64, bool) { return joinedSize(args[0], "") }},
	"list_join_string":                 {"join", func(args []ref.Val) (int64, bool) { return joinedSize(args[0], string(args[1].(types.String))) }},
	"string_format":                    {"format", formattedSize},
}

// sizeGuards redeclares the guarded overloads of base with their checks.
func sizeGuards(base *cel.Env) ([]cel.EnvOption, error) {
	declared := base.Functions()
	var options []cel.EnvOption
	for id, guard := range guarded {
		function := declared[guard.function]
		if function == nil {
			return nil, fmt.Errorf("guarding %s: function %s is not declared", id, guard.function)
		}
		bindings, err := function.Bindings()
		if err != nil {
			return nil, fmt.Errorf("guarding %s: %w", id, err)
		}
		var original *functions.Overload
		for _, binding := range bindings {
			if binding.Operator == id {
				original = binding
			}
		}
		var argTypes []*cel.Type
		var resultType *cel.Type
		member := false
		for _, overload := range function.OverloadDecls() {
			if overload.ID() == id {
				argTypes, resultType, member = overload.ArgTypes(), overload.ResultType(), overload.IsMemberFunction()
			}
		}
		if original == nil || resultType == nil {
			return nil, fmt.Errorf("guarding %s: overload not found in %s", id, guard.function)
		}
		binding, err := guardedBinding(id, guard.function, guard.check, original, len(argTypes))
		if err != nil {
			return nil, err
		}
		declare := cel.Overload
		if member {
			declare = cel.MemberOverload
		}
		options = append(options, cel.Function(guard.function, declare(id, argTypes, resultType, binding)))
	}
	return options, nil
}

func guardedBinding(id, function string, check sizeCheck, original *functions.Overload, arity int) (cel.OverloadOpt, error) {
	refuse := func(args []ref.Val) ref.Val {
		if size, ok := check(args); !ok {
			return types.NewErr("%s would build a string of %d bytes or more, over the limit of %d", function, size, MaxStringBytes)
		}
		return nil
	}
	switch {
	case arity == 1 && original.Unary != nil:
		return cel.UnaryBinding(func(arg ref.Val) ref.Val {
			if err := refuse([]ref.Val{arg}); err != nil {
				return err
			}
			return original.Unary(arg)
		}), nil
	case arity == 2 && original.Binary != nil:
		return cel.BinaryBinding(func(lhs, rhs ref.Val) ref.Val {
			if err := refuse([]ref.Val{lhs, rhs}); err != nil {
				return err
			}
			return original.Binary(lhs, rhs)
		}), nil
	case original.Function != nil:
		return cel.FunctionBinding(func(args ...ref.Val) ref.Val {
			if err := refuse(args); err != nil {
				return err
			}
			return original.Function(args...)
		}), nil
	}
	return nil, fmt.Errorf("guarding %s: no binding for %d arguments", id, arity)
}

// replacedSize is the length of s.replace(old, new[, limit]), as
// strings.Replace builds it: an empty old matches at every rune boundary.
func replacedSize(args []ref.Val, limit int64) (int64, bool) {
	s, old, replacement := string(args[0].(types.String)), string(args[1].(types.String)), string(args[2].(types.String))
	var matches int64
	if old == "" {
		matches = int64(utf8.RuneCountInString(s)) + 1
	} else {
		matches = int64(strings.Count(s, old))
	}
	if limit >= 0 && matches > limit {
		matches = limit
	}
	size := int64(len(s)) + matches*(int64(len(replacement))-int64(len(old)))
	return size, size <= MaxStringBytes
}

// joinedSize is the length of list.join(separator).
func joinedSize(list ref.Val, separator string) (int64, bool) {
	lister, ok := list.(traits.Lister)
	if !ok {
		return 0, true // cel-go's implementation reports the type error
	}
	count := int64(lister.Size().(types.Int))
	var size int64
	if count > 0 {
		size = (count - 1) * int64(len(separator))
	}
	for i := int64(0); i < count && size <= MaxStringBytes; i++ {
		if s, ok := lister.Get(types.Int(i)).(types.String); ok {
			size += int64(len(s))
		}
	}
	return size, size <= MaxStringBytes
}

// formattedScalarBytes bounds how long one number, bool or other scalar can
// print: %f of the largest double at the largest precision (ext.Strings caps
// it at 100) is about 410 characters.
const formattedScalarBytes = 420

// formattedSize bounds the length of format.format(args): the format string
// plus each argument printed at its widest (%x doubles a string).
func formattedSize(args []ref.Val) (int64, bool) {
	size := int64(len(args[0].(types.String)))
	walked, ok := walkSize(args[1], MaxStringBytes-size, measure{stringFactor: 2, scalar: formattedScalarBytes, separator: 2})
	return size + walked, ok
}

// jsonMeasure bounds a value's JSON encoding, escapes aside.
var jsonMeasure = measure{stringFactor: 1, quotes: 2, scalar: 32, separator: 1}

// boundedSize measures v as JSON, stopping once it is over limit.
func boundedSize(v ref.Val, limit int64) (int64, bool) {
	return walkSize(v, limit, jsonMeasure)
}

// measure says how much each kind of value counts.
type measure struct {
	stringFactor, quotes, scalar, separator int64
}

// walkSize adds up a value's size as m counts it, stopping as soon as it is
// over limit, so that a list holding one large string many times is refused
// without being walked in full.
func walkSize(v ref.Val, limit int64, m measure) (int64, bool) {
	var size int64
	var walk func(v ref.Val) bool
	walk = func(v ref.Val) bool {
		switch value := v.(type) {
		case types.String:
			size += int64(len(value))*m.stringFactor + m.quotes
		case types.Bytes:
			size += (int64(len(value))+2)/3*4*m.stringFactor + m.quotes // base64 in JSON
		case traits.Mapper:
			size += 2
			iterator := value.Iterator()
			for iterator.HasNext() == types.True {
				key := iterator.Next()
				size += m.separator * 2
				if !walk(key) || !walk(value.Get(key)) {
					return false
				}
			}
		case traits.Lister:
			size += 2
			count := int64(value.Size().(types.Int))
			for i := range count {
				size += m.separator
				if !walk(value.Get(types.Int(i))) {
					return false
				}
			}
		default:
			size += m.scalar
		}
		return size <= limit
	}
	ok := walk(v)
	return size, ok
}
