package policy

import (
	"encoding/json"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/custody-dev/custody/services/gatekeeper/internal/licence"
)

// LicenceBuiltin is the Rego function that judges an SPDX licence
// expression with internal/licence (decision 0092):
//
//	custody.licence(expression, {"allow": [ids], "deny": [ids]})
//	  = {"verdict": "allowed"|"denied"|"not_allowed"|"unknown",
//	     "licences": [the licences behind the verdict], "problem": string}
//
// A list entry that is not one SPDX licence is an evaluation error, so the
// gatekeeper denies rather than judge against a list it misread.
const LicenceBuiltin = "custody.licence"

// LicencesBuiltin judges every component of an SBOM at once, in Go
// rather than by a Rego walk (an SBOM may hold 20,000 components), each
// distinct expression once:
//
//	custody.licences([{purl, name, version, license}], rule)
//	  = [{"component": purl, else name@version, "expression": license,
//	      "verdict", "licences", "problem"}] for each component not allowed
const LicencesBuiltin = "custody.licences"

func init() {
	rego.RegisterBuiltin2(&rego.Function{
		Name: LicenceBuiltin,
		Decl: types.NewFunction(
			types.Args(types.S, types.NewObject(nil, types.NewDynamicProperty(types.S, types.A))),
			types.NewObject(nil, types.NewDynamicProperty(types.S, types.A)),
		),
		Memoize: true,
	}, licenceBuiltin)
	rego.RegisterBuiltin2(&rego.Function{
		Name: LicencesBuiltin,
		Decl: types.NewFunction(
			types.Args(types.NewArray(nil, types.A), types.NewObject(nil, types.NewDynamicProperty(types.S, types.A))),
			types.NewArray(nil, types.NewObject(nil, types.NewDynamicProperty(types.S, types.A))),
		),
		Memoize: true,
	}, licencesBuiltin)
}

func licencesBuiltin(_ rego.BuiltinContext, compsTerm, ruleTerm *ast.Term) (*ast.Term, error) {
	comps, ok := compsTerm.Value.(*ast.Array)
	if !ok {
		return nil, fmt.Errorf("%s: components are %s, want an array", LicencesBuiltin, ast.ValueName(compsTerm.Value))
	}
	r, err := ruleOf(LicencesBuiltin, ruleTerm)
	if err != nil {
		return nil, err
	}
	str := func(obj ast.Object, key string) string {
		if v := obj.Get(ast.StringTerm(key)); v != nil {
			if s, ok := v.Value.(ast.String); ok {
				return string(s)
			}
		}
		return ""
	}
	seen := map[string]licence.Result{}
	var out []*ast.Term
	for i := range comps.Len() {
		obj, ok := comps.Elem(i).Value.(ast.Object)
		if !ok {
			return nil, fmt.Errorf("%s: component %d is %s, want an object", LicencesBuiltin, i, ast.ValueName(comps.Elem(i).Value))
		}
		expr := str(obj, "license")
		res, ok := seen[expr]
		if !ok {
			res = licence.Check(expr, r)
			seen[expr] = res
		}
		if res.Verdict == licence.Allowed {
			continue
		}
		id := str(obj, "purl")
		if id == "" {
			id = str(obj, "name") + "@" + str(obj, "version")
		}
		out = append(out, resultTerm(res,
			ast.Item(ast.StringTerm("component"), ast.StringTerm(id)),
			ast.Item(ast.StringTerm("expression"), ast.StringTerm(expr))))
	}
	return ast.ArrayTerm(out...), nil
}

// ruleOf reads {"allow": [...], "deny": [...]} and validates it.
func ruleOf(fn string, ruleTerm *ast.Term) (licence.Rule, error) {
	raw, err := ast.JSON(ruleTerm.Value)
	if err != nil {
		return licence.Rule{}, fmt.Errorf("%s: rule: %v", fn, err)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return licence.Rule{}, fmt.Errorf("%s: rule: %v", fn, err)
	}
	var rule struct {
		Allow []string `json:"allow"`
		Deny  []string `json:"deny"`
	}
	if err := json.Unmarshal(b, &rule); err != nil {
		return licence.Rule{}, fmt.Errorf("%s: rule: want {\"allow\": [licence ids], \"deny\": [licence ids]}: %v", fn, err)
	}
	r := licence.Rule{Allow: rule.Allow, Deny: rule.Deny}
	if err := r.Validate(); err != nil {
		return licence.Rule{}, fmt.Errorf("%s: rule: %v", fn, err)
	}
	return r, nil
}

func resultTerm(res licence.Result, extra ...[2]*ast.Term) *ast.Term {
	licences := make([]*ast.Term, len(res.Licences))
	for i, l := range res.Licences {
		licences[i] = ast.StringTerm(l)
	}
	return ast.ObjectTerm(append([][2]*ast.Term{
		ast.Item(ast.StringTerm("verdict"), ast.StringTerm(string(res.Verdict))),
		ast.Item(ast.StringTerm("licences"), ast.ArrayTerm(licences...)),
		ast.Item(ast.StringTerm("problem"), ast.StringTerm(res.Problem)),
	}, extra...)...)
}

func licenceBuiltin(_ rego.BuiltinContext, exprTerm, ruleTerm *ast.Term) (*ast.Term, error) {
	expr, ok := exprTerm.Value.(ast.String)
	if !ok {
		return nil, fmt.Errorf("%s: expression is %s, want a string", LicenceBuiltin, ast.ValueName(exprTerm.Value))
	}
	r, err := ruleOf(LicenceBuiltin, ruleTerm)
	if err != nil {
		return nil, err
	}
	return resultTerm(licence.Check(string(expr), r)), nil
}
