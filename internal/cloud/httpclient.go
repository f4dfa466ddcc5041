package cloud

import (
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// HTTPClientFor wraps the EC2 client's HTTP client to work around a race
// between aws-sdk-go-v2 (smithy-go) and net/http: the SDK closes a
// request's body as soon as the response headers arrive, after which its
// body wrapper's WriteTo returns io.EOF; net/http's connection writer, when
// still finishing the request (it reads the body once more to check its
// length), takes that for a write failure and closes the connection under
// the response. The SDK then retries after a jittered backoff of up to
// seconds. It takes a server that answers before the request is fully
// written, which a local VPC on the same machine often does. Hiding WriteTo
// makes net/http read the body, and Read after Close is a clean EOF.
func HTTPClientFor(c ec2.HTTPClient) ec2.HTTPClient { return bodyWithoutWriteTo{c} }

type bodyWithoutWriteTo struct{ client ec2.HTTPClient }

func (c bodyWithoutWriteTo) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body = struct{ io.ReadCloser }{req.Body}
	}
	return c.client.Do(req)
}
