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

func init() {
	rego.RegisterBuiltin2(&rego.Function{
		Name: LicenceBuiltin,
		Decl: types.NewFunction(
			types.Args(types.S, types.NewObject(nil, types.NewDynamicProperty(types.S, types.A))),
			types.NewObject(nil, types.NewDynamicProperty(types.S, types.A)),
		),
		Memoize: true,
	}, licenceBuiltin)
}

func licenceBuiltin(_ rego.BuiltinContext, exprTerm, ruleTerm *ast.Term) (*ast.Term, error) {
	expr, ok := exprTerm.Value.(ast.String)
	if !ok {
		return nil, fmt.Errorf("%s: expression is %s, want a string", LicenceBuiltin, ast.ValueName(exprTerm.Value))
	}
	raw, err := ast.JSON(ruleTerm.Value)
	if err != nil {
		return nil, fmt.Errorf("%s: rule: %v", LicenceBuiltin, err)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: rule: %v", LicenceBuiltin, err)
	}
	var rule struct {
		Allow []string `json:"allow"`
		Deny  []string `json:"deny"`
	}
	if err := json.Unmarshal(b, &rule); err != nil {
		return nil, fmt.Errorf("%s: rule: want {\"allow\": [licence ids], \"deny\": [licence ids]}: %v", LicenceBuiltin, err)
	}
	r := licence.Rule{Allow: rule.Allow, Deny: rule.Deny}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("%s: rule: %v", LicenceBuiltin, err)
	}
	res := licence.Check(string(expr), r)
	licences := make([]*ast.Term, len(res.Licences))
	for i, l := range res.Licences {
		licences[i] = ast.StringTerm(l)
	}
	return ast.ObjectTerm(
		ast.Item(ast.StringTerm("verdict"), ast.StringTerm(string(res.Verdict))),
		ast.Item(ast.StringTerm("licences"), ast.ArrayTerm(licences...)),
		ast.Item(ast.StringTerm("problem"), ast.StringTerm(res.Problem)),
	), nil
}
