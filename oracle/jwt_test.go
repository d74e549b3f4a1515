package main

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/emptypb"
)

// signer is an RSA key with its JWKS.
type signer struct {
	key  *rsa.PrivateKey
	jwks string
}

func newSigner(t *testing.T, kid string) signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	jwks := fmt.Sprintf(`{"keys":[{"kty":"RSA","alg":"RS256","kid":%q,"n":%q,"e":%q}]}`,
		kid, b64(k.N.Bytes()), b64(big.NewInt(int64(k.E)).Bytes()))
	return signer{key: k, jwks: jwks}
}

func (s signer) token(t *testing.T, kid string, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]any{"alg": "RS256", "kid": kid, "typ": "JWT"}) + "." + enc(claims)
	d := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// istiodJwtFilter: one provider as convertToEnvoyJwtConfig writes it ({provider OR
// allow_missing}, payload_in_metadata).
func istiodJwtFilter(t *testing.T, issuer string, audiences []string, jwks string) *hcmv3.HttpFilter {
	cfg := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"origins-0": {
			Issuer: issuer, Audiences: audiences, PayloadInMetadata: "payload",
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{
				Specifier: &core.DataSource_InlineString{InlineString: jwks}}},
		}},
		Rules: []*jwtv3.RequirementRule{{
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
				RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{
					Requirements: []*jwtv3.JwtRequirement{
						{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}},
						{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}},
					}}}}},
		}},
		BypassCorsPreflight: true,
	}
	return &hcmv3.HttpFilter{Name: jwtAuthnFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, cfg)}}
}

func TestJwtAuthnAsEnvoyDecides(t *testing.T) {
	good := newSigner(t, "k1")
	other := newSigner(t, "k1")
	now := time.Now().Unix()
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"iss": "issuer-a", "sub": "alice", "aud": "api", "exp": now + 3600}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	fc := chainWith(t, gatewayHCM(), istiodJwtFilter(t, "issuer-a", []string{"https://api/"}, good.jwks))
	cases := []struct {
		name, auth string
		status     int
		reason     jwtStatus
	}{
		{"no token passes (allow_missing)", "", 0, jwtOk},
		{"a good token", "Bearer " + good.token(t, "k1", claims(nil)), 0, jwtOk},
		{"another key", "Bearer " + other.token(t, "k1", claims(nil)), 401, jwtVerifyFail},
		{"no key of that kid", "Bearer " + good.token(t, "k2", claims(nil)), 401, jwksKidAlgMismatch},
		{"expired past the skew", "Bearer " + good.token(t, "k1", claims(map[string]any{"exp": now - 120})), 401, jwtExpired},
		{"expired within the skew", "Bearer " + good.token(t, "k1", claims(map[string]any{"exp": now - 10})), 0, jwtOk},
		{"not yet valid", "Bearer " + good.token(t, "k1", claims(map[string]any{"nbf": now + 600})), 401, jwtNotYetValid},
		{"another issuer", "Bearer " + good.token(t, "k1", claims(map[string]any{"iss": "issuer-b"})), 401, jwtUnknownIssuer},
		{"another audience", "Bearer " + good.token(t, "k1", claims(map[string]any{"aud": []any{"web"}})), 403, jwtAudNotAllowed},
		{"malformed", "Bearer a.b", 401, jwtBadFormat},
		{"another scheme is no token", "Basic " + good.token(t, "k1", claims(nil)), 0, jwtOk},
	}
	for _, c := range cases {
		req := baseRequest()
		if c.auth != "" {
			req.Headers["Authorization"] = c.auth
		}
		res, unsupported := evaluate(t, fc, req)
		if len(unsupported) != 0 {
			t.Errorf("%s: unsupported %v", c.name, unsupported)
			continue
		}
		if c.status == 0 {
			if res.Denied {
				t.Errorf("%s: want allowed, got %+v", c.name, res)
			}
			continue
		}
		if !res.Denied || res.DeniedBy != "jwt" || res.Status != c.status || !strings.Contains(res.Why, string(c.reason)) {
			t.Errorf("%s: want %d %q, got %+v", c.name, c.status, c.reason, res)
		}
	}
}

func TestVerifiedPayloadReachesRbacAndTheTokenHeaderIsRemoved(t *testing.T) {
	s := newSigner(t, "k1")
	hcm := gatewayHCM()
	fc := chainWith(t, hcm, istiodJwtFilter(t, "issuer-a", nil, s.jwks))
	e := &authzEval{req: newAuthzRequest(&generated{}, fc, httpManager(fc), baseRequest())}
	e.req.headers["authorization"] = "Bearer " + s.token(t, "k1", map[string]any{"iss": "issuer-a", "sub": "alice"})
	d := e.runJwtAuthn(httpManager(fc))
	if d == nil || d.status != jwtOk {
		t.Fatalf("want verified, got %+v", d)
	}
	got := e.req.dynamicMetadata[jwtAuthnFilter].GetFields()["payload"].GetStructValue().GetFields()["sub"].GetStringValue()
	if got != "alice" {
		t.Errorf("payload sub: %q", got)
	}
	if _, ok := e.req.headers["authorization"]; ok {
		t.Errorf("the token's header stays though forward is false")
	}
}
