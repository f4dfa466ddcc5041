package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
)

// DecodeConfig unmarshals a network config into v, the one way every
// plugin reads its stdin. Malformed JSON is a decoding failure (code 6). A
// key given twice in one object, at any depth, is an invalid config (code
// 7) naming it: encoding/json would silently keep the last value, and a
// config that says two things has no right reading. A value of the wrong
// type is code 7 naming the field, and a cniVersion we do not speak is
// code 1 (see CheckVersion).
func DecodeConfig(data []byte, v any) error {
	if !json.Valid(data) {
		// Unmarshal says where and why.
		err := json.Unmarshal(data, &json.RawMessage{})
		return types.NewError(CodeDecodingFailure, fmt.Sprintf("failed to decode network config: %v", err), "")
	}
	if key, err := duplicateKey(data); err != nil {
		return types.NewError(CodeDecodingFailure, fmt.Sprintf("failed to decode network config: %v", err), "")
	} else if key != "" {
		return FieldError(key, "given more than once; give it once")
	}
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return decodeError(err)
	}
	if err := CheckVersion(head.CNIVersion); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return decodeError(err)
	}
	return nil
}

// decodeError gives an error of json.Unmarshal its CNI code: a value of the
// wrong type names the field (7), anything else is a decoding failure (6).
func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		field := typeErr.Field
		if field == "" {
			field = "(top level)"
		}
		return FieldError(field, "expected %s, got JSON %s", typeErr.Type, typeErr.Value)
	}
	var fe *types.Error
	if errors.As(err, &fe) {
		return fe
	}
	return types.NewError(CodeDecodingFailure, fmt.Sprintf("failed to decode network config: %v", err), "")
}

// duplicateKey returns the first key that an object in data holds twice,
// as a path from the top ("ipam.ranges[0][1].subnet"), or "" when there is
// none. Keys are compared as written: JSON keys are case-sensitive.
func duplicateKey(data []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return duplicateIn(dec, "")
}

// duplicateIn reads one value from dec and looks for a duplicate key in
// it; path names the value.
func duplicateIn(dec *json.Decoder, path string) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return "", err
			}
			key, _ := tok.(string)
			at := key
			if path != "" {
				at = path + "." + key
			}
			if seen[key] {
				return at, nil
			}
			seen[key] = true
			if dup, err := duplicateIn(dec, at); dup != "" || err != nil {
				return dup, err
			}
		}
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if dup, err := duplicateIn(dec, fmt.Sprintf("%s[%d]", path, i)); dup != "" || err != nil {
				return dup, err
			}
		}
	default:
		return "", nil
	}
	_, err = dec.Token() // the closing '}' or ']'
	return "", err
}

// CheckVersion refuses a cniVersion the plugins do not speak (code 1).
// skel checks it too before a binary's verb runs, but its message names no
// field, and in-process callers do not go through skel.
func CheckVersion(v string) error {
	supported := SpecVersions.SupportedVersions()
	if v == "" {
		return Errorf(CodeIncompatibleVersion, "invalid config: field \"cniVersion\": missing; supported: %v", supported)
	}
	if !slices.Contains(supported, v) {
		return Errorf(CodeIncompatibleVersion, "invalid config: field \"cniVersion\": %q is not supported; supported: %v", v, supported)
	}
	return nil
}

// PrevResult returns the prevResult of conf, in whatever version it came,
// as a current result, or nil when the config has none. required is for
// CHECK, which compares the attachment with the result of the ADD. Every
// problem is code 7 on the field "prevResult".
func PrevResult(conf *types.NetConf, required bool) (*current.Result, error) {
	if conf.RawPrevResult == nil && conf.PrevResult == nil {
		if required {
			return nil, FieldError("prevResult", "missing: CHECK needs the result of the ADD")
		}
		return nil, nil
	}
	if err := cniversion.ParsePrevResult(conf); err != nil {
		return nil, FieldError("prevResult", "%v", err)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, FieldError("prevResult", "%v", err)
	}
	return prev, nil
}

// Spelling is one name a config field goes by (ours in camelCase, the ECS
// agent's in kebab-case, ...) and the value given under it: nil when the
// config does not use that name.
type Spelling[T any] struct {
	Field string
	Value *T
}

// Merged is the value of a field with several spellings and the name it was
// given under; Field is "" when the config gave it under none.
type Merged[T any] struct {
	Field string
	Value T
}

// Set reports whether the config gave the field at all.
func (m Merged[T]) Set() bool { return m.Field != "" }

// MergeSpellings folds the spellings of one field into its value. Given
// under several names, the values must agree (equal); otherwise it is code
// 7 on the later name, naming both and showing both values.
func MergeSpellings[T any](equal func(a, b T) bool, show func(T) string, spellings ...Spelling[T]) (Merged[T], error) {
	var m Merged[T]
	for _, s := range spellings {
		if s.Value == nil {
			continue
		}
		if !m.Set() {
			m = Merged[T]{Field: s.Field, Value: *s.Value}
			continue
		}
		if !equal(m.Value, *s.Value) {
			return Merged[T]{}, FieldError(s.Field, "differs from %s; give one of the two (%q: %s, %q: %s)",
				m.Field, m.Field, show(m.Value), s.Field, show(*s.Value))
		}
	}
	return m, nil
}

// ParsePrefix reads a config field holding an address or network in CIDR
// notation ("10.0.1.5/24"), naming the field and what is wrong when it is
// not one: a missing prefix length gets an example of the fix, and an
// IPv4-mapped IPv6 address is refused (it is written as the IPv4 address).
func ParsePrefix(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if _, aerr := netip.ParseAddr(s); aerr == nil {
			return netip.Prefix{}, FieldError(field, "%q is not a CIDR: it has no prefix length; write it in CIDR notation, e.g. %q", s, s+"/24")
		}
		return netip.Prefix{}, FieldError(field, "%q is not a CIDR", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, FieldError(field, "%q is an IPv4-mapped IPv6 address; write the IPv4 address itself", s)
	}
	return p, nil
}
