// Package argocdhealth runs an Argo CD resource health script (Lua) on an
// object the way Argo CD does: in gopher-lua, the interpreter Argo CD embeds,
// with only the base, table, string and math libraries, the object as the
// global obj, and a returned table {status, message}. Tests use it to check
// config/argocd/health.lua on real objects.
package argocdhealth

import (
	"context"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Health is what a health script returns.
type Health struct {
	Status  string
	Message string
}

// statuses are the health statuses Argo CD knows.
var statuses = map[string]bool{"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true}

// timeout bounds one run, as Argo CD bounds its scripts.
const timeout = time.Second

// Run runs script on obj, an object as the API server returns it
// (unstructured content), and returns the health it computes.
func Run(script string, obj map[string]any) (Health, error) {
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	state.SetContext(ctx)
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		if err := state.CallByParam(lua.P{Fn: state.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return Health{}, fmt.Errorf("opening the Lua library %q: %w", lib.name, err)
		}
	}
	value, err := toLua(state, obj)
	if err != nil {
		return Health{}, err
	}
	state.SetGlobal("obj", value)
	if err := state.DoString(script); err != nil {
		return Health{}, fmt.Errorf("running the health script: %w", err)
	}
	table, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("the health script returned %s, not a table", state.Get(-1).Type())
	}
	health := Health{Status: lua.LVAsString(table.RawGetString("status")), Message: lua.LVAsString(table.RawGetString("message"))}
	if !statuses[health.Status] {
		return Health{}, fmt.Errorf("the health script returned status %q, which Argo CD does not know", health.Status)
	}
	return health, nil
}

// toLua converts unstructured content to Lua values as Argo CD does: maps
// and lists to tables (lists 1-based), numbers to numbers.
func toLua(state *lua.LState, value any) (lua.LValue, error) {
	switch v := value.(type) {
	case nil:
		return lua.LNil, nil
	case bool:
		return lua.LBool(v), nil
	case string:
		return lua.LString(v), nil
	case int64:
		return lua.LNumber(v), nil
	case float64:
		return lua.LNumber(v), nil
	case map[string]any:
		table := state.NewTable()
		for key, item := range v {
			converted, err := toLua(state, item)
			if err != nil {
				return nil, err
			}
			table.RawSetString(key, converted)
		}
		return table, nil
	case []any:
		table := state.NewTable()
		for _, item := range v {
			converted, err := toLua(state, item)
			if err != nil {
				return nil, err
			}
			table.Append(converted)
		}
		return table, nil
	}
	return nil, fmt.Errorf("cannot give Lua a value of type %T", value)
}
