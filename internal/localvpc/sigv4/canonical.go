package sigv4

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// canonicalRequest joins the parts of a canonical request. headers is the
// block of "name:value\n" lines, which is why a blank line follows it.
func canonicalRequest(method, uri, query, headers, signedHeaders, payloadHash string) string {
	return method + "\n" + uri + "\n" + query + "\n" + headers + "\n" + signedHeaders + "\n" + payloadHash
}

// wirePath is the request's path as the client sent it, before any
// decoding: the signer encoded that form once more, so the server must
// start from it rather than from a decoded and re-encoded copy.
func wirePath(r *http.Request) string {
	if u := r.RequestURI; strings.HasPrefix(u, "/") {
		p, _, _ := strings.Cut(u, "?")
		return p
	}
	return r.URL.EscapedPath()
}

// canonicalURIs returns the canonical URI of a wire path, first as the Go
// SDK computes it (the path as sent, URI-encoded once more) and then, if
// different, as botocore does (with dot segments and empty segments removed
// first, as RFC 3986 normalisation and the AWS services require).
func canonicalURIs(path string) []string {
	if path == "" {
		path = "/"
	}
	plain := uriEncode(path, false)
	normal := uriEncode(normalizePath(path), false)
	if normal == plain {
		return []string{plain}
	}
	return []string{plain, normal}
}

// normalizePath removes "." and ".." segments and repeated slashes, keeping
// a leading and a trailing slash.
func normalizePath(p string) string {
	var out []string
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, seg)
		}
	}
	n := "/" + strings.Join(out, "/")
	if strings.HasSuffix(p, "/") && len(out) > 0 {
		n += "/"
	}
	return n
}

// canonicalQuery sorts the query parameters by encoded name, then by
// encoded value, each encoded with SigV4's strict rules. The signature of
// a presigned request is not part of what it signs.
func canonicalQuery(rawQuery string, presigned bool) string {
	type pair struct{ k, v string }
	var pairs []pair
	for _, part := range strings.Split(rawQuery, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, v = queryUnescape(k), queryUnescape(v)
		if presigned && k == querySignature {
			continue
		}
		pairs = append(pairs, pair{uriEncode(k, true), uriEncode(v, true)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// queryUnescape decodes a query component as the Go SDK's signer does
// (a '+' is a space). Text that is not valid percent-encoding is kept as
// it is, so that it is encoded, and signed, literally.
func queryUnescape(s string) string {
	u, err := url.QueryUnescape(s)
	if err != nil {
		return s
	}
	return u
}

// uriEncode percent-encodes every byte except the unreserved characters
// of RFC 3986, and '/' unless encodeSlash, with upper-case hex digits.
func uriEncode(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) || (c == '/' && !encodeSlash) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

func isUnreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// canonicalHeaders builds the "name:value\n" lines of the signed headers,
// in the order the signer listed them.
func canonicalHeaders(r *http.Request, signed []string) string {
	byName := make(map[string][]string, len(r.Header))
	for k, v := range r.Header {
		lk := strings.ToLower(k)
		byName[lk] = append(byName[lk], v...)
	}
	// Go's server moves these out of the header map; the client sent them
	// as headers and signed them as such.
	byName["host"] = []string{r.Host}
	if _, ok := byName["content-length"]; !ok && r.ContentLength >= 0 {
		byName["content-length"] = []string{strconv.FormatInt(r.ContentLength, 10)}
	}
	var b strings.Builder
	for _, name := range signed {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(canonicalHeaderValue(byName[name]))
		b.WriteByte('\n')
	}
	return b.String()
}

// canonicalHeaderValue trims each value, collapses runs of spaces inside it
// to one, and joins repeated headers with commas.
func canonicalHeaderValue(values []string) string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = strings.Join(strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' }), " ")
	}
	return strings.Join(out, ",")
}
