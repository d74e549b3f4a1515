package main

// What the gateway's envoy.filters.http.jwt_authn decides for a simulated request,
// evaluated over the config istiod generated (RequestAuthentication:
// pilot/pkg/security/authn/policy_applier.go convertToEnvoyJwtConfig) with Envoy's
// semantics, independently of meshcheck's model:
//   - envoy/source/extensions/filters/http/jwt_authn/filter.cc, matcher.cc: the first
//     rule whose route match takes the request gives the requirement; none: pass;
//     bypass_cors_preflight lets a CORS preflight through;
//   - verifier.cc: the requirement tree (provider_name, requires_any with
//     allow_missing / allow_missing_or_failed folded in, requires_all), requires_any's
//     final status preferring errors other than JwtMissed and JwtUnknownIssuer;
//   - extractor.cc: tokens from the provider's headers (value_prefix), query
//     parameters and cookies, Authorization "Bearer " and access_token by default;
//     each location allows the issuers of the providers that name it;
//   - authenticator.cc: every extracted token verified (from the last), parse, issuer
//     allowed at its location, time (60 s clock skew), audiences, then the key;
//     a good token's payload into dynamic metadata (payload_in_metadata), its
//     forward_payload_header and claim_to_headers added, the token's header removed
//     unless `forward`;
//   - jwt_verify_lib (jwt.cc, jwks.cc, verify.cc, check_audience.cc): parsing, the
//     statuses' messages, keys by kid and alg.
// A refusal is 401 with the status, 403 for JwtAudienceNotAllowed
// (filter.cc onComplete: Code::Forbidden for that status only).

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"net/url"
	"sort"
	"strings"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// jwtStatus is jwt_verify_lib's Status, by its message (getStatusString).
type jwtStatus string

const (
	jwtOk               jwtStatus = ""
	jwtMissed           jwtStatus = "Jwt is missing"
	jwtBadFormat        jwtStatus = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
	jwtHeaderBadBase64  jwtStatus = "Jwt header is an invalid Base64url encoded"
	jwtHeaderBadJSON    jwtStatus = "Jwt header is an invalid JSON"
	jwtHeaderBadAlg     jwtStatus = "Jwt header [alg] field is required and must be a string"
	jwtHeaderAlgNotImpl jwtStatus = "Jwt header [alg] is not supported"
	jwtHeaderBadKid     jwtStatus = "Jwt header [kid] field is not a string"
	jwtPayloadBadBase64 jwtStatus = "Jwt payload is an invalid Base64url encoded"
	jwtPayloadBadJSON   jwtStatus = "Jwt payload is an invalid JSON"
	jwtAudNotString     jwtStatus = "Jwt payload [aud] field is not a string or string list"
	jwtSigBadBase64     jwtStatus = "Jwt signature is an invalid Base64url encoded"
	jwtUnknownIssuer    jwtStatus = "Jwt issuer is not configured"
	jwtNotYetValid      jwtStatus = "Jwt not yet valid"
	jwtExpired          jwtStatus = "Jwt is expired"
	jwtAudNotAllowed    jwtStatus = "Audiences in Jwt are not allowed"
	jwtVerifyFail       jwtStatus = "Jwt verification fails"
	jwtEd25519Length    jwtStatus = "Jwt ED25519 signature is wrong length"
	jwksNoValidKeys     jwtStatus = "Jwks doesn't have any valid public key"
	jwksKidAlgMismatch  jwtStatus = "Jwks doesn't have key to match kid or alg from Jwt"
)

// clockSkew: jwt_verify_lib kClockSkewInSecond, when the provider sets none.
const clockSkew = 60

var supportedAlgs = map[string]bool{
	"ES256": true, "ES384": true, "ES512": true, "HS256": true, "HS384": true, "HS512": true,
	"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true,
	"EdDSA": true,
}

// jwtDecision is what jwt_authn did with the request.
type jwtDecision struct {
	status jwtStatus
	// httpStatus: the answer when refused (401, or 403 for audiences).
	httpStatus int
	why        string
}

// parsedJWT is jwt_verify_lib's Jwt.
type parsedJWT struct {
	headerB64, payloadB64 string
	alg, kid, iss         string
	nbf, exp              uint64
	audiences             []string
	payload               map[string]any
	signature             []byte
}

// jwtToken is one extracted token (extractor.cc JwtLocation).
type jwtToken struct {
	token string
	// issuers: those of the providers that name the location ("" for one without).
	issuers map[string]bool
	// header: the request header it came from ("" for a parameter or cookie).
	header string
}

func (t jwtToken) issuerAllowed(iss string) bool {
	return t.issuers[""] || t.issuers[iss]
}

// runJwtAuthn evaluates the connection manager's jwt_authn filter (if any) on e.req:
// nil when it has none. On success the request carries what the filter leaves: the
// payloads in dynamic metadata, its header changes.
func (e *authzEval) runJwtAuthn(hcm *hcmv3.HttpConnectionManager) *jwtDecision {
	var cfg *jwtv3.JwtAuthentication
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() != jwtAuthnFilter {
			continue
		}
		var c jwtv3.JwtAuthentication
		if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(&c) != nil {
			e.unsupportedf("jwt_authn config not readable")
			return nil
		}
		cfg = &c
	}
	if cfg == nil {
		return nil
	}
	if len(cfg.GetRequirementMap()) > 0 || cfg.GetFilterStateRules() != nil {
		e.unsupportedf("jwt_authn requirement_map / filter_state_rules not evaluated")
		return nil
	}
	if cfg.GetBypassCorsPreflight() && e.isCorsPreflight() {
		return &jwtDecision{why: "JWT: CORS preflight bypassed"}
	}
	req := e.requirementFor(cfg)
	if req == nil {
		return &jwtDecision{why: "JWT: no rule takes the request"}
	}
	v := &jwtVerification{e: e, cfg: cfg, payload: map[string]*structpb.Struct{}}
	st := v.requirement(req)
	if st != jwtOk {
		code := 401
		if st == jwtAudNotAllowed {
			code = 403
		}
		return &jwtDecision{status: st, httpStatus: code, why: fmt.Sprintf("JWT: %d %s", code, st)}
	}
	// verifier.cc completeWithStatus: the payloads reach the metadata when the whole
	// requirement holds.
	if len(v.payload) > 0 {
		if e.req.dynamicMetadata == nil {
			e.req.dynamicMetadata = map[string]*structpb.Struct{}
		}
		md := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for k, p := range v.payload {
			md.Fields[k] = structpb.NewStructValue(p)
		}
		e.req.dynamicMetadata[jwtAuthnFilter] = md
	}
	for _, m := range v.mutations {
		m()
	}
	if v.verified == 0 {
		return &jwtDecision{why: "JWT: no token, allowed (allow_missing)"}
	}
	return &jwtDecision{why: "JWT: token verified"}
}

// isCorsPreflight: filter.cc's check (OPTIONS with Origin and
// Access-Control-Request-Method).
func (e *authzEval) isCorsPreflight() bool {
	_, origin := e.req.headers["origin"]
	_, method := e.req.headers["access-control-request-method"]
	return e.req.method == "OPTIONS" && origin && method
}

// requirementFor: the requirement of the first rule whose match takes the request
// (matcher.cc; istiod writes one rule, prefix "/").
func (e *authzEval) requirementFor(cfg *jwtv3.JwtAuthentication) *jwtv3.JwtRequirement {
	path, _, _ := strings.Cut(e.req.path, "?")
	for _, r := range cfg.GetRules() {
		m := r.GetMatch()
		if len(m.GetHeaders()) > 0 || len(m.GetQueryParameters()) > 0 || m.GetCaseSensitive() != nil {
			e.unsupportedf("jwt_authn rule match on headers, parameters or case not evaluated")
			return nil
		}
		switch {
		case m.GetPrefix() != "" || m.GetPathSpecifier() == nil:
			if !strings.HasPrefix(path, m.GetPrefix()) {
				continue
			}
		case m.GetPath() != "":
			if path != m.GetPath() {
				continue
			}
		default:
			e.unsupportedf("jwt_authn rule match %T not evaluated", m.GetPathSpecifier())
			return nil
		}
		if r.GetRequirementName() != "" {
			e.unsupportedf("jwt_authn requirement_name not evaluated")
			return nil
		}
		if r.GetRequires() == nil {
			return &jwtv3.JwtRequirement{}
		}
		return r.GetRequires()
	}
	return nil
}

// jwtVerification is one request's pass through the requirement tree.
type jwtVerification struct {
	e   *authzEval
	cfg *jwtv3.JwtAuthentication
	// payload: payload_in_metadata name -> a verified token's payload.
	payload map[string]*structpb.Struct
	// mutations: header changes of the verified tokens, applied when all holds.
	mutations []func()
	verified  int
}

// requirement: verifier.cc's status for r.
func (v *jwtVerification) requirement(r *jwtv3.JwtRequirement) jwtStatus {
	switch t := r.GetRequiresType().(type) {
	case nil:
		return jwtOk
	case *jwtv3.JwtRequirement_ProviderName:
		return v.provider(t.ProviderName, nil)
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		auds := t.ProviderAndAudiences.GetAudiences()
		return v.provider(t.ProviderAndAudiences.GetProviderName(), &auds)
	case *jwtv3.JwtRequirement_RequiresAny:
		return v.any(t.RequiresAny.GetRequirements())
	case *jwtv3.JwtRequirement_RequiresAll:
		for _, c := range t.RequiresAll.GetRequirements() {
			if st := v.requirement(c); st != jwtOk {
				return st
			}
		}
		return jwtOk
	case *jwtv3.JwtRequirement_AllowMissing:
		return v.allProviders(false)
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return v.allProviders(true)
	default:
		v.e.unsupportedf("jwt_authn requirement %T not evaluated", t)
		return jwtOk
	}
}

// any: AnyVerifierImpl: allow_missing(_or_failed) folded in as flags (a child of
// their own only when nothing else is listed); the first OK child wins; else the
// children's statuses, preferring errors other than missed and unknown issuer.
func (v *jwtVerification) any(children []*jwtv3.JwtRequirement) jwtStatus {
	allowMissing, allowFailed := false, false
	var regular []*jwtv3.JwtRequirement
	for _, c := range children {
		switch c.GetRequiresType().(type) {
		case *jwtv3.JwtRequirement_AllowMissing:
			allowMissing = true
		case *jwtv3.JwtRequirement_AllowMissingOrFailed:
			allowFailed = true
		default:
			regular = append(regular, c)
		}
	}
	if len(regular) == 0 && (allowMissing || allowFailed) {
		return v.allProviders(allowFailed)
	}
	final := jwtMissed
	for _, c := range regular {
		st := v.requirement(c)
		if st == jwtOk {
			return jwtOk
		}
		if (st != jwtMissed && st != jwtUnknownIssuer) || final == jwtMissed {
			final = st
		}
	}
	if allowFailed || (allowMissing && final == jwtMissed) {
		return jwtOk
	}
	return final
}

// provider: ProviderVerifierImpl: the provider's tokens, each must verify.
func (v *jwtVerification) provider(name string, audiences *[]string) jwtStatus {
	p, ok := v.cfg.GetProviders()[name]
	if !ok {
		v.e.unsupportedf("jwt_authn requirement names provider %q, which is not configured", name)
		return jwtOk
	}
	tokens := v.extract([]*jwtv3.JwtProvider{p})
	if len(tokens) == 0 {
		return jwtMissed
	}
	for i := len(tokens) - 1; i >= 0; i-- {
		if st := v.authenticate(tokens[i], p, audiences); st != jwtOk {
			return st
		}
	}
	return jwtOk
}

// allProviders: AllowMissingVerifierImpl / AllowFailedVerifierImpl: tokens from
// every provider's locations, each verified by the provider of its issuer.
func (v *jwtVerification) allProviders(allowFailed bool) jwtStatus {
	var all []*jwtv3.JwtProvider
	for _, name := range sortedProviderNames(v.cfg) {
		all = append(all, v.cfg.GetProviders()[name])
	}
	tokens := v.extract(all)
	status := jwtMissed
	for i := len(tokens) - 1; i >= 0; i-- {
		j, st := parseJWT(tokens[i].token)
		if st != jwtOk {
			status = st
			continue
		}
		p := v.providerOfIssuer(j.iss)
		if !tokens[i].issuerAllowed(j.iss) || p == nil {
			status = jwtUnknownIssuer
			continue
		}
		status = v.authenticate(tokens[i], p, nil)
	}
	if allowFailed || status == jwtMissed {
		return jwtOk
	}
	return status
}

func sortedProviderNames(cfg *jwtv3.JwtAuthentication) []string {
	names := make([]string, 0, len(cfg.GetProviders()))
	for n := range cfg.GetProviders() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// providerOfIssuer: jwks_cache findByIssuer: the first provider with that issuer,
// else the first without one.
func (v *jwtVerification) providerOfIssuer(iss string) *jwtv3.JwtProvider {
	var noIssuer *jwtv3.JwtProvider
	for _, n := range sortedProviderNames(v.cfg) {
		p := v.cfg.GetProviders()[n]
		if p.GetIssuer() == iss {
			return p
		}
		if p.GetIssuer() == "" && noIssuer == nil {
			noIssuer = p
		}
	}
	return noIssuer
}

// extract: extractor.cc for providers: header locations (value_prefix), parameters,
// cookies; the default locations for a provider that names none. Each location
// allows its providers' issuers; the payload headers are removed first
// (sanitizeHeaders).
func (v *jwtVerification) extract(providers []*jwtv3.JwtProvider) []jwtToken {
	type loc struct{ kind, name, prefix string }
	issuers := map[loc]map[string]bool{}
	var order []loc
	add := func(l loc, iss string) {
		if issuers[l] == nil {
			issuers[l] = map[string]bool{}
			order = append(order, l)
		}
		issuers[l][iss] = true
	}
	for _, p := range providers {
		if p.GetForwardPayloadHeader() != "" {
			delete(v.e.req.headers, strings.ToLower(p.GetForwardPayloadHeader()))
		}
		for _, ch := range p.GetClaimToHeaders() {
			delete(v.e.req.headers, strings.ToLower(ch.GetHeaderName()))
		}
		if len(p.GetFromHeaders()) == 0 && len(p.GetFromParams()) == 0 && len(p.GetFromCookies()) == 0 {
			add(loc{"header", "authorization", "Bearer "}, p.GetIssuer())
			add(loc{"param", "access_token", ""}, p.GetIssuer())
			continue
		}
		for _, h := range p.GetFromHeaders() {
			add(loc{"header", strings.ToLower(h.GetName()), h.GetValuePrefix()}, p.GetIssuer())
		}
		for _, q := range p.GetFromParams() {
			add(loc{"param", q, ""}, p.GetIssuer())
		}
		for _, c := range p.GetFromCookies() {
			add(loc{"cookie", c, ""}, p.GetIssuer())
		}
	}
	var out []jwtToken
	for _, l := range order {
		var value string
		var ok bool
		switch l.kind {
		case "header":
			value, ok = v.e.req.headers[l.name]
			if ok && l.prefix != "" {
				i := strings.Index(value, l.prefix)
				if i < 0 {
					ok = false
				} else {
					value = jwtChars(value[i+len(l.prefix):])
				}
			}
		case "param":
			value, ok = queryParam(v.e.req.path, l.name)
		case "cookie":
			value, ok = cookie(v.e.req.headers["cookie"], l.name)
		}
		if ok && value != "" {
			header := ""
			if l.kind == "header" {
				header = l.name
			}
			out = append(out, jwtToken{token: value, issuers: issuers[l], header: header})
		}
	}
	return out
}

// jwtChars: extractor.cc extractJWT: from the first base64url-or-dot character to the
// next other one.
func jwtChars(s string) string {
	is := func(c rune) bool {
		return c == '-' || c == '_' || c == '.' || c == '=' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
	}
	start := strings.IndexFunc(s, is)
	if start < 0 {
		return ""
	}
	s = s[start:]
	if end := strings.IndexFunc(s, func(c rune) bool { return !is(c) }); end >= 0 {
		s = s[:end]
	}
	return s
}

func queryParam(path, name string) (string, bool) {
	_, q, ok := strings.Cut(path, "?")
	if !ok {
		return "", false
	}
	vals, err := url.ParseQuery(q)
	if err != nil || len(vals[name]) == 0 {
		return "", false
	}
	return vals[name][0], true
}

func cookie(header, name string) (string, bool) {
	for _, part := range strings.Split(header, ";") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && k == name {
			return strings.Trim(val, "\""), true
		}
	}
	return "", false
}

// authenticate: authenticator.cc startVerify/verifyKey/handleGoodJwt for one token.
func (v *jwtVerification) authenticate(t jwtToken, p *jwtv3.JwtProvider, audiences *[]string) jwtStatus {
	j, st := parseJWT(t.token)
	if st != jwtOk {
		return st
	}
	if !t.issuerAllowed(j.iss) {
		return jwtUnknownIssuer
	}
	if p.GetIssuer() != "" && p.GetIssuer() != j.iss {
		// findByProvider then the provider's own issuer check (jwks_cache JwksData).
		return jwtUnknownIssuer
	}
	skew := uint64(clockSkew)
	if p.GetClockSkewSeconds() > 0 {
		skew = uint64(p.GetClockSkewSeconds())
	}
	now := uint64(time.Now().Unix())
	if j.nbf > now+skew {
		return jwtNotYetValid
	}
	if j.exp != 0 && now > j.exp+skew {
		return jwtExpired
	}
	want := p.GetAudiences()
	if audiences != nil {
		want = *audiences
	}
	if !audiencesAllowed(want, j.audiences) {
		return jwtAudNotAllowed
	}
	keys, st := v.jwks(p)
	if st != jwtOk {
		return st
	}
	if st := verifySignature(j, keys); st != jwtOk {
		return st
	}
	v.verified++
	v.goodToken(t, p, j)
	return jwtOk
}

// goodToken: handleGoodJwt: the payload for the metadata, the header changes.
func (v *jwtVerification) goodToken(t jwtToken, p *jwtv3.JwtProvider, j *parsedJWT) {
	if name := p.GetPayloadInMetadata(); name != "" {
		if s, err := structpb.NewStruct(j.payload); err == nil {
			v.payload[name] = s
		} else {
			v.e.unsupportedf("jwt payload not representable in metadata: %v", err)
		}
	}
	headers := v.e.req.headers
	if h := p.GetForwardPayloadHeader(); h != "" {
		payload := j.payloadB64
		v.mutations = append(v.mutations, func() { headers[strings.ToLower(h)] = payload })
	}
	for _, ch := range p.GetClaimToHeaders() {
		if val, ok := claimString(j.payload[ch.GetClaimName()]); ok {
			name := strings.ToLower(ch.GetHeaderName())
			v.mutations = append(v.mutations, func() { headers[name] = val })
		}
	}
	if !p.GetForward() && t.header != "" {
		name := t.header
		v.mutations = append(v.mutations, func() { delete(headers, name) })
	}
}

// claimString: addJWTClaimToHeader's string of a primitive claim.
func claimString(c any) (string, bool) {
	switch x := c.(type) {
	case string:
		return x, x != ""
	case bool:
		return fmt.Sprint(x), true
	case float64:
		if x >= 0 && x < math.MaxUint64 && x == math.Trunc(x) {
			return fmt.Sprintf("%d", uint64(x)), true
		}
		return fmt.Sprintf("%f", x), true
	}
	return "", false
}

// audiencesAllowed: check_audience.cc: none configured allows all; else one of the
// token's, without scheme and trailing slash, is configured.
func audiencesAllowed(configured, got []string) bool {
	if len(configured) == 0 {
		return true
	}
	norm := func(a string) string {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "http://"), "https://")
		return strings.TrimSuffix(a, "/")
	}
	allowed := map[string]bool{}
	for _, a := range configured {
		allowed[norm(a)] = true
	}
	for _, a := range got {
		if allowed[norm(a)] {
			return true
		}
	}
	return false
}

func b64url(s string) ([]byte, bool) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	return b, err == nil
}

// parseJWT: jwt_verify_lib Jwt::parseFromString.
func parseJWT(token string) (*parsedJWT, jwtStatus) {
	if strings.Count(token, ".") != 2 {
		return nil, jwtBadFormat
	}
	parts := strings.Split(token, ".")
	j := &parsedJWT{headerB64: parts[0], payloadB64: parts[1]}
	raw, ok := b64url(parts[0])
	if !ok {
		return nil, jwtHeaderBadBase64
	}
	var header map[string]any
	if json.Unmarshal(raw, &header) != nil || header == nil {
		return nil, jwtHeaderBadJSON
	}
	alg, ok := header["alg"].(string)
	if !ok {
		return nil, jwtHeaderBadAlg
	}
	if !supportedAlgs[alg] {
		return nil, jwtHeaderAlgNotImpl
	}
	j.alg = alg
	if kid, present := header["kid"]; present {
		s, ok := kid.(string)
		if !ok {
			return nil, jwtHeaderBadKid
		}
		j.kid = s
	}
	raw, ok = b64url(parts[1])
	if !ok {
		return nil, jwtPayloadBadBase64
	}
	if json.Unmarshal(raw, &j.payload) != nil || j.payload == nil {
		return nil, jwtPayloadBadJSON
	}
	for _, c := range []string{"iss", "sub", "jti"} {
		if x, present := j.payload[c]; present {
			s, ok := x.(string)
			if !ok {
				return nil, jwtStatus(fmt.Sprintf("Jwt payload [%s] field is not a string", c))
			}
			if c == "iss" {
				j.iss = s
			}
		}
	}
	for _, c := range []string{"iat", "nbf", "exp"} {
		x, present := j.payload[c]
		if !present {
			continue
		}
		n, ok := x.(float64)
		if !ok {
			return nil, jwtStatus(fmt.Sprintf("Jwt payload [%s] field is not an integer", c))
		}
		if n < 0 || n >= math.MaxUint64 || n != math.Trunc(n) {
			return nil, jwtStatus(fmt.Sprintf("Jwt payload [%s] field is not a positive 64 bit integer", c))
		}
		switch c {
		case "nbf":
			j.nbf = uint64(n)
		case "exp":
			j.exp = uint64(n)
		}
	}
	switch a := j.payload["aud"].(type) {
	case nil:
		if _, present := j.payload["aud"]; present {
			return nil, jwtAudNotString
		}
	case string:
		j.audiences = []string{a}
	case []any:
		for _, x := range a {
			s, ok := x.(string)
			if !ok {
				return nil, jwtAudNotString
			}
			j.audiences = append(j.audiences, s)
		}
	default:
		return nil, jwtAudNotString
	}
	sig, ok := b64url(parts[2])
	if !ok {
		return nil, jwtSigBadBase64
	}
	j.signature = sig
	return j, jwtOk
}

// jwk is one key of a JWKS (jwks.cc).
type jwk struct {
	kid, alg, kty string
	rsa           *rsa.PublicKey
	ec            *ecdsa.PublicKey
	crv           string
	oct           []byte
	ed            ed25519.PublicKey
}

// jwks: the provider's keys: local_jwks inline (istiod inlines what it fetched); a
// remote JWKS is not fetched here.
func (v *jwtVerification) jwks(p *jwtv3.JwtProvider) ([]jwk, jwtStatus) {
	local := p.GetLocalJwks()
	if local == nil {
		v.e.unsupportedf("jwt provider with remote_jwks: its keys are not fetched here")
		return nil, jwksNoValidKeys
	}
	text := local.GetInlineString()
	if text == "" {
		v.e.unsupportedf("jwt provider local_jwks other than inline_string not read")
		return nil, jwksNoValidKeys
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if json.Unmarshal([]byte(text), &doc) != nil {
		return nil, jwksNoValidKeys
	}
	var keys []jwk
	for _, k := range doc.Keys {
		if key, ok := parseJWK(k); ok {
			keys = append(keys, key)
		}
	}
	if len(keys) == 0 {
		return nil, jwksNoValidKeys
	}
	return keys, jwtOk
}

func parseJWK(k map[string]any) (jwk, bool) {
	str := func(name string) string { s, _ := k[name].(string); return s }
	bytes := func(name string) ([]byte, bool) { return b64url(str(name)) }
	key := jwk{kid: str("kid"), alg: str("alg"), kty: str("kty")}
	switch key.kty {
	case "RSA":
		n, ok1 := bytes("n")
		e, ok2 := bytes("e")
		if !ok1 || !ok2 || len(n) == 0 || len(e) == 0 || len(e) > 8 {
			return key, false
		}
		key.rsa = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	case "EC":
		x, ok1 := bytes("x")
		y, ok2 := bytes("y")
		var curve elliptic.Curve
		switch str("crv") {
		case "P-256", "":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return key, false
		}
		if !ok1 || !ok2 {
			return key, false
		}
		key.crv = curve.Params().Name
		key.ec = &ecdsa.PublicKey{Curve: curve, X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
	case "oct":
		b, ok := bytes("k")
		if !ok || len(b) == 0 {
			return key, false
		}
		key.oct = b
	case "OKP":
		x, ok := bytes("x")
		if str("crv") != "Ed25519" || !ok || len(x) != ed25519.PublicKeySize {
			return key, false
		}
		key.ed = ed25519.PublicKey(x)
	default:
		return key, false
	}
	return key, true
}

// verifySignature: verify.cc verifyJwtWithoutTimeChecking: keys of the token's kid
// (when both have one) and alg (when the key has one); the first that verifies.
func verifySignature(j *parsedJWT, keys []jwk) jwtStatus {
	signed := []byte(j.headerB64 + "." + j.payloadB64)
	matched := false
	for _, k := range keys {
		if j.kid != "" && k.kid != "" && k.kid != j.kid {
			continue
		}
		if k.alg != "" && k.alg != j.alg {
			continue
		}
		matched = true
		ok, st := verifyWith(k, j.alg, signed, j.signature)
		if st != jwtOk {
			return st
		}
		if ok {
			return jwtOk
		}
	}
	if matched {
		return jwtVerifyFail
	}
	return jwksKidAlgMismatch
}

func hashOf(alg string) (crypto.Hash, bool) {
	switch alg[2:] {
	case "256":
		return crypto.SHA256, true
	case "384":
		return crypto.SHA384, true
	case "512":
		return crypto.SHA512, true
	}
	return 0, false
}

func digest(h crypto.Hash, data []byte) []byte {
	switch h {
	case crypto.SHA384:
		d := sha512.Sum384(data)
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512(data)
		return d[:]
	default:
		d := sha256.Sum256(data)
		return d[:]
	}
}

// verifyWith: one key against the token's alg (a key of another type is no match).
func verifyWith(k jwk, alg string, signed, sig []byte) (bool, jwtStatus) {
	switch {
	case alg == "EdDSA":
		if k.ed == nil {
			return false, jwtOk
		}
		if len(sig) != ed25519.SignatureSize {
			return false, jwtEd25519Length
		}
		return ed25519.Verify(k.ed, signed, sig), jwtOk
	case strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS"):
		h, _ := hashOf(alg)
		if k.rsa == nil {
			return false, jwtOk
		}
		d := digest(h, signed)
		if alg[0] == 'R' {
			return rsa.VerifyPKCS1v15(k.rsa, h, d, sig) == nil, jwtOk
		}
		return rsa.VerifyPSS(k.rsa, h, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil, jwtOk
	case strings.HasPrefix(alg, "ES"):
		h, _ := hashOf(alg)
		if k.ec == nil {
			return false, jwtOk
		}
		size := (k.ec.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return false, jwtOk
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		return ecdsa.Verify(k.ec, digest(h, signed), r, s), jwtOk
	case strings.HasPrefix(alg, "HS"):
		h, _ := hashOf(alg)
		if k.oct == nil {
			return false, jwtOk
		}
		var mac []byte
		switch h {
		case crypto.SHA384:
			m := hmac.New(sha512.New384, k.oct)
			m.Write(signed)
			mac = m.Sum(nil)
		case crypto.SHA512:
			m := hmac.New(sha512.New, k.oct)
			m.Write(signed)
			mac = m.Sum(nil)
		default:
			m := hmac.New(sha256.New, k.oct)
			m.Write(signed)
			mac = m.Sum(nil)
		}
		return hmac.Equal(mac, sig), jwtOk
	}
	return false, jwtOk
}
