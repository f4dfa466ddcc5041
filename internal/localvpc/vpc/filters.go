package vpc

import (
	"encoding/base64"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Filter is one of a describe call's filters: a resource matches when one
// of its values for Name matches one of Values (with EC2's * and ?
// wildcards). A resource matches a request when it matches every filter.
type Filter struct {
	Name   string
	Values []string
}

// DescribeInput is what every describe call takes.
type DescribeInput struct {
	IDs        []string
	Filters    []Filter
	MaxResults int // 0 for all; otherwise 5 to 1000
	NextToken  string
}

// attributes maps each filter name a resource supports to its values.
type attributes[T any] map[string]func(T) []string

// checkFilters refuses unknown filter names, as EC2 does even when no
// resource would be tested.
func checkFilters[T any](attrs attributes[T], filters []Filter) error {
	for _, f := range filters {
		if strings.HasPrefix(f.Name, "tag:") || f.Name == "tag-key" || f.Name == "tag-value" {
			continue
		}
		if _, ok := attrs[f.Name]; !ok {
			return invalidValue("The filter '%s' is invalid", f.Name)
		}
	}
	return nil
}

// matches reports whether a resource with these tags passes all filters.
func matches[T any](r T, tags Tags, attrs attributes[T], filters []Filter) bool {
	for _, f := range filters {
		if !anyMatch(f.Values, filterValues(r, tags, attrs, f.Name)) {
			return false
		}
	}
	return true
}

func filterValues[T any](r T, tags Tags, attrs attributes[T], name string) []string {
	switch {
	case strings.HasPrefix(name, "tag:"):
		if v, ok := tags[strings.TrimPrefix(name, "tag:")]; ok {
			return []string{v}
		}
		return nil
	case name == "tag-key":
		return slices.Collect(maps.Keys(tags))
	case name == "tag-value":
		return slices.Collect(maps.Values(tags))
	}
	return attrs[name](r)
}

func anyMatch(patterns, values []string) bool {
	for _, p := range patterns {
		for _, v := range values {
			if wildcardMatch(p, v) {
				return true
			}
		}
	}
	return false
}

// wildcardMatch matches EC2 filter patterns: * is any run of characters,
// ? any one character, and \ escapes the next character.
func wildcardMatch(pattern, s string) bool {
	if pattern == "" {
		return s == ""
	}
	switch c := pattern[0]; c {
	case '*':
		for i := 0; i <= len(s); i++ {
			if wildcardMatch(pattern[1:], s[i:]) {
				return true
			}
		}
		return false
	case '?':
		return s != "" && wildcardMatch(pattern[1:], s[1:])
	case '\\':
		if len(pattern) > 1 {
			return s != "" && s[0] == pattern[1] && wildcardMatch(pattern[2:], s[1:])
		}
		fallthrough
	default:
		return s != "" && s[0] == c && wildcardMatch(pattern[1:], s[1:])
	}
}

// checkPaging applies EC2's rules on MaxResults: 5 to 1000, and not
// together with explicit IDs.
func checkPaging(in DescribeInput, idsParam string) error {
	if in.MaxResults == 0 && in.NextToken == "" {
		return nil
	}
	if len(in.IDs) > 0 {
		return combination("The parameter %s cannot be used with the parameter maxResults", idsParam)
	}
	if in.MaxResults != 0 && (in.MaxResults < 5 || in.MaxResults > 1000) {
		return invalidValue("Value ( %d ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", in.MaxResults)
	}
	return nil
}

// paginate cuts a page out of items sorted by ID. The token is the last
// ID returned (marked and encoded), so a page boundary survives creations
// and deletions.
func paginate[T any](items []T, id func(T) string, maxResults int, token string) ([]T, string, error) {
	start := 0
	if token != "" {
		// EC2 answers a token it did not issue as an invalid value.
		raw, err := base64.RawURLEncoding.DecodeString(token)
		last, ok := strings.CutPrefix(string(raw), tokenPrefix)
		if err != nil || !ok || last == "" {
			return nil, "", invalidValue("Value (%s) for parameter NextToken is invalid. The token is invalid.", token)
		}
		start, _ = slices.BinarySearchFunc(items, last, func(t T, target string) int {
			return strings.Compare(id(t), target)
		})
		if start < len(items) && id(items[start]) == last {
			start++
		}
	}
	if maxResults == 0 || start+maxResults >= len(items) {
		return items[start:], "", nil
	}
	page := items[start : start+maxResults]
	return page, base64.RawURLEncoding.EncodeToString([]byte(tokenPrefix + id(page[len(page)-1]))), nil
}

// tokenPrefix starts every pagination token, so that one the model did not
// issue is told apart from one it did.
const tokenPrefix = "vpcnet-page:"

func one(s string) []string { return []string{s} }

func boolString(b bool) string { return strconv.FormatBool(b) }

func itoa32(n int32) string { return strconv.Itoa(int(n)) }
