// Package purgetest holds loopback fakes of the CDN vendors' purge APIs
// that check each request's shape and authenticate it independently of the
// vendor client libraries.
//
// Each fake is an http.Handler, safe for concurrent use, that records the
// purges it accepted and the reasons it refused the others. Refusals answer
// the way the vendor does (status and error body), so the client library's
// error handling is exercised too.
package purgetest

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const maxBody = 64 << 10

// recorder keeps what a fake accepted and refused.
type recorder struct {
	mu       sync.Mutex
	problems []string
}

func (r *recorder) refuse(req *http.Request, why string) {
	r.mu.Lock()
	r.problems = append(r.problems, req.Method+" "+req.URL.Path+": "+why)
	r.mu.Unlock()
}

// Problems returns why each refused request was refused.
func (r *recorder) Problems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.problems)
}

func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err == nil && len(b) > maxBody {
		err = fmt.Errorf("body larger than %d bytes", maxBody)
	}
	return b, err
}

// Invalidation is one CloudFront CreateInvalidation the fake accepted.
type Invalidation struct {
	CallerReference string
	Paths           []string
}

// CloudFront is CloudFront's API for CreateInvalidation on one
// distribution. It re-signs each request with SigV4 and the secret it
// knows, and accepts only an exact signature match.
type CloudFront struct {
	DistributionID, AccessKeyID, SecretAccessKey string
	// Fail refuses that many authenticated calls with a non-retryable
	// InvalidArgument before accepting.
	Fail int

	recorder
	invalidations []Invalidation
	calls         int
}

// Invalidations returns the accepted invalidations in order.
func (f *CloudFront) Invalidations() []Invalidation {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.invalidations)
}

// Calls is the number of requests that passed authentication.
func (f *CloudFront) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *CloudFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, awsCode, why string) {
		f.refuse(r, why)
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(code)
		io.WriteString(w, `<?xml version="1.0"?><ErrorResponse><Error><Type>Sender</Type><Code>`+awsCode+`</Code><Message>`+why+`</Message></Error></ErrorResponse>`)
	}
	body, err := readBody(r)
	if err != nil {
		fail(http.StatusBadRequest, "InvalidArgument", err.Error())
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/2020-05-31/distribution/"+f.DistributionID+"/invalidation" {
		fail(http.StatusNotFound, "NoSuchDistribution", "wrong method or path")
		return
	}
	auth := r.Header.Get("Authorization")
	cred, _, _ := strings.Cut(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 Credential="), ",")
	parts := strings.Split(cred, "/")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") || len(parts) != 5 || parts[0] != f.AccessKeyID || parts[2] != "us-east-1" || parts[3] != "cloudfront" || parts[4] != "aws4_request" {
		fail(http.StatusForbidden, "InvalidClientTokenId", "bad credential scope")
		return
	}
	_, signed, _ := strings.Cut(auth, "SignedHeaders=")
	signed, gotSig, _ := strings.Cut(signed, ", Signature=")
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil || !slices.Contains(strings.Split(signed, ";"), "host") || !slices.Contains(strings.Split(signed, ";"), "x-amz-date") {
		fail(http.StatusForbidden, "SignatureDoesNotMatch", "X-Amz-Date or Host not signed")
		return
	}
	sum := sha256.Sum256(body)
	if r.Header.Get("X-Amz-Content-Sha256") != "" && r.Header.Get("X-Amz-Content-Sha256") != hex.EncodeToString(sum[:]) {
		fail(http.StatusBadRequest, "XAmzContentSHA256Mismatch", "body hash")
		return
	}
	// Re-sign the same request, with only the headers it signed.
	re, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	for _, h := range strings.Split(signed, ";") {
		if h != "host" {
			re.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	if err := v4.NewSigner().SignHTTP(r.Context(), aws.Credentials{AccessKeyID: f.AccessKeyID, SecretAccessKey: f.SecretAccessKey}, re, hex.EncodeToString(sum[:]), "cloudfront", "us-east-1", when); err != nil {
		fail(http.StatusForbidden, "SignatureDoesNotMatch", "re-sign: "+err.Error())
		return
	}
	_, wantSig, _ := strings.Cut(re.Header.Get("Authorization"), ", Signature=")
	if gotSig == "" || !hmac.Equal([]byte(gotSig), []byte(wantSig)) {
		fail(http.StatusForbidden, "SignatureDoesNotMatch", "signature does not verify")
		return
	}
	var batch struct {
		XMLName         xml.Name `xml:"http://cloudfront.amazonaws.com/doc/2020-05-31/ InvalidationBatch"`
		CallerReference string   `xml:"CallerReference"`
		Paths           struct {
			Quantity int      `xml:"Quantity"`
			Items    []string `xml:"Items>Path"`
		} `xml:"Paths"`
	}
	if err := xml.Unmarshal(body, &batch); err != nil || batch.CallerReference == "" || batch.Paths.Quantity != len(batch.Paths.Items) || len(batch.Paths.Items) == 0 {
		fail(http.StatusBadRequest, "MalformedInput", "not an InvalidationBatch with a caller reference and matching quantity")
		return
	}
	f.mu.Lock()
	f.calls++
	if f.Fail > 0 {
		f.Fail--
		f.mu.Unlock()
		fail(http.StatusBadRequest, "InvalidArgument", "try later")
		return
	}
	f.invalidations = append(f.invalidations, Invalidation{CallerReference: batch.CallerReference, Paths: batch.Paths.Items})
	id := fmt.Sprintf("I%013d", len(f.invalidations))
	f.mu.Unlock()
	w.Header().Set("Location", "https://cloudfront.amazonaws.com/2020-05-31/distribution/"+f.DistributionID+"/invalidation/"+id)
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusCreated)
	var paths strings.Builder
	for _, p := range batch.Paths.Items {
		xml.EscapeText(&paths, []byte(p))
	}
	var ref strings.Builder
	xml.EscapeText(&ref, []byte(batch.CallerReference))
	io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>
<Invalidation xmlns="http://cloudfront.amazonaws.com/doc/2020-05-31/"><Id>`+id+`</Id><Status>InProgress</Status><CreateTime>2026-12-02T12:00:00Z</CreateTime><InvalidationBatch><Paths><Quantity>`+
		strconv.Itoa(len(batch.Paths.Items))+`</Quantity><Items><Path>`+paths.String()+`</Path></Items></Paths><CallerReference>`+ref.String()+`</CallerReference></InvalidationBatch></Invalidation>`)
}

// Rule is one Cloud CDN cache invalidation the fake accepted.
type Rule struct {
	Path, Host, RequestID string
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// Compute is Compute Engine's urlMaps.invalidateCache for one URL map,
// under the path prefix /compute/v1/ (point the client's endpoint at
// <server>/compute/v1/). It accepts only the bearer token Token.
type Compute struct {
	Project, URLMap, Token string

	recorder
	rules []Rule
}

// Rules returns the accepted invalidations in order.
func (f *Compute) Rules() []Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rules)
}

func (f *Compute) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, msg string) {
		f.refuse(r, msg)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": msg}})
		w.Write(b)
	}
	body, err := readBody(r)
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	if !hmac.Equal([]byte(r.Header.Get("Authorization")), []byte("Bearer "+f.Token)) {
		fail(http.StatusUnauthorized, "Request had invalid authentication credentials.")
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/compute/v1/projects/"+f.Project+"/global/urlMaps/"+f.URLMap+"/invalidateCache" {
		fail(http.StatusNotFound, "no such method "+r.Method+" "+r.URL.Path)
		return
	}
	id := r.URL.Query().Get("requestId")
	var rule struct {
		Path string `json:"path"`
		Host string `json:"host"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if !uuidRE.MatchString(id) || dec.Decode(&rule) != nil || !strings.HasPrefix(rule.Path, "/") {
		fail(http.StatusBadRequest, "bad request ID or body")
		return
	}
	f.mu.Lock()
	f.rules = append(f.rules, Rule{Path: rule.Path, Host: rule.Host, RequestID: id})
	n := len(f.rules)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"kind": "compute#operation", "name": "operation-%d-invalidate", "operationType": "invalidateCache", "status": "DONE"}`, n)
}

// ServiceAccount is a Google service account whose key the fake OAuth
// token endpoint knows.
type ServiceAccount struct {
	Email string
	Key   *rsa.PrivateKey
}

// NewServiceAccount returns a service account with a fresh 2048-bit key.
func NewServiceAccount(email string) (*ServiceAccount, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &ServiceAccount{Email: email, Key: k}, nil
}

// JSON returns the account's key file (the JSON `gcloud iam
// service-accounts keys create` writes) with tokenURI as its token_uri.
func (s *ServiceAccount) JSON(project, tokenURI string) []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(s.Key)
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": project, "private_key_id": "0123456789abcdef",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": s.Email, "client_id": "100000000000000000001", "token_uri": tokenURI,
		"auth_uri": "https://accounts.google.com/o/oauth2/auth",
	})
	return b
}

// GoogleToken is Google's OAuth 2.0 token endpoint for the JWT bearer
// grant of one service account: it verifies the assertion's RS256
// signature with the account's public key, its issuer, audience (the
// endpoint's own URL, TokenURL), scope and lifetime, and returns
// AccessToken.
type GoogleToken struct {
	Account     *rsa.PublicKey
	Email       string
	TokenURL    string
	Scope       string
	AccessToken string

	recorder
	issued int
}

// Issued is the number of access tokens handed out.
func (f *GoogleToken) Issued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued
}

func (f *GoogleToken) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(why string) {
		f.refuse(r, why)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}`)
	}
	if r.Method != http.MethodPost {
		fail("not POST")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fail("not a JWT bearer grant")
		return
	}
	parts := strings.Split(r.PostForm.Get("assertion"), ".")
	if len(parts) != 3 {
		fail("assertion is not a JWS")
		return
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	var claims struct {
		Iss   string `json:"iss"`
		Aud   string `json:"aud"`
		Scope string `json:"scope"`
		Iat   int64  `json:"iat"`
		Exp   int64  `json:"exp"`
	}
	h, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	c, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || json.Unmarshal(h, &hdr) != nil || json.Unmarshal(c, &claims) != nil || hdr.Alg != "RS256" {
		fail("malformed assertion")
		return
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(f.Account, crypto.SHA256, sum[:], sig); err != nil {
		fail("signature does not verify with the account's key")
		return
	}
	now := time.Now().Unix()
	if claims.Iss != f.Email || claims.Aud != f.TokenURL || !slices.Contains(strings.Fields(claims.Scope), f.Scope) ||
		claims.Iat > now+60 || claims.Exp < now || claims.Exp-claims.Iat > 3600 {
		fail(fmt.Sprintf("claims iss %q aud %q scope %q", claims.Iss, claims.Aud, claims.Scope))
		return
	}
	f.mu.Lock()
	f.issued++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	b, _ := json.Marshal(map[string]any{"access_token": f.AccessToken, "token_type": "Bearer", "expires_in": 3599})
	w.Write(b)
}

// FastPurge is Akamai's Fast Purge v3 invalidate-by-URL endpoint. It
// recomputes the EdgeGrid EG1-HMAC-SHA256 signature from the credentials it
// knows, per Akamai's "Authenticate with EdgeGrid" specification, and
// accepts only a match. Serve it over TLS: EdgeGrid signs the https scheme.
type FastPurge struct {
	ClientToken, ClientSecret, AccessToken string
	// Network is production or staging.
	Network string

	recorder
	objects [][]string
}

// Objects returns the URL lists of the accepted purges in order.
func (f *FastPurge) Objects() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.objects)
}

func mac(key, msg string) string {
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(msg))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func (f *FastPurge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	deny := func(why string) {
		f.refuse(r, why)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"type": "https://problems.luna.akamaiapis.net/-/pep-authn/deny", "title": "Not authorized", "status": 401}`)
	}
	body, err := readBody(r)
	if err != nil {
		deny(err.Error())
		return
	}
	rest, ok := strings.CutPrefix(r.Header.Get("Authorization"), "EG1-HMAC-SHA256 ")
	i := strings.LastIndex(rest, "signature=")
	if !ok || i < 0 {
		deny("no EG1-HMAC-SHA256 authorization")
		return
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(rest[:i], ";"), ";") {
		k, v, _ := strings.Cut(kv, "=")
		fields[k] = v
	}
	ts, err := time.Parse("20060102T15:04:05-0700", fields["timestamp"])
	if fields["client_token"] != f.ClientToken || fields["access_token"] != f.AccessToken || fields["nonce"] == "" || err != nil || time.Since(ts).Abs() > 5*time.Minute {
		deny("tokens, nonce or timestamp")
		return
	}
	sum := sha256.Sum256(body)
	data := strings.Join([]string{r.Method, "https", r.Host, r.URL.RequestURI(), "", base64.StdEncoding.EncodeToString(sum[:]), "EG1-HMAC-SHA256 " + rest[:i]}, "\t")
	if !hmac.Equal([]byte(rest[i+len("signature="):]), []byte(mac(mac(f.ClientSecret, fields["timestamp"]), data))) {
		deny("signature does not verify")
		return
	}
	var req struct {
		Objects []string `json:"objects"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if r.Method != http.MethodPost || r.URL.Path != "/ccu/v3/invalidate/url/"+f.Network || r.Header.Get("Content-Type") != "application/json" ||
		dec.Decode(&req) != nil || len(req.Objects) == 0 {
		f.refuse(r, "not an invalidate-by-URL request on "+f.Network)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.objects = append(f.objects, req.Objects)
	n := len(f.objects)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"httpStatus": 201, "detail": "Request accepted", "estimatedSeconds": 5, "purgeId": "edcp-custody-%d", "supportId": "17PY1321286429616716-211907680"}`, n)
}
