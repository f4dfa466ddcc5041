package ec2api

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/localvpc/vpc"
)

// post sends a form as any client would, and returns the status and body.
func (c *cloud) post(t *testing.T, form url.Values) (int, string) {
	t.Helper()
	resp, err := http.Post(c.server.URL, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, readAll(t, resp)
}

func form(action string, kv ...string) url.Values {
	v := url.Values{"Action": {action}, "Version": {APIVersion}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// TestInputsAsEC2 sends requests EC2 refuses, and the ones just inside its
// limits: each refusal is an error document with EC2's code, and changes
// nothing.
func TestInputsAsEC2(t *testing.T) {
	c := newCloud(t, Config{Auth: AuthenticatorFunc(func(*http.Request, []byte) (string, error) { return "test", nil })})
	var groups []string
	for i := range 6 {
		g, err := c.model.CreateSecurityGroup(vpc.CreateSecurityGroupInput{Name: fmt.Sprint("g", i), Description: "test"})
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g.ID)
	}
	spare, err := c.model.CreateNetworkInterface(vpc.CreateNetworkInterfaceInput{SubnetID: c.subnet.ID})
	if err != nil {
		t.Fatal(err)
	}
	withGroups := func(f url.Values, param string, n int) url.Values {
		for i, g := range groups[:n] {
			f.Set(fmt.Sprintf("%s.%d", param, i+1), g)
		}
		return f
	}
	long := strings.Repeat("é", vpc.MaxDescription+1)
	foreignToken := base64.RawURLEncoding.EncodeToString([]byte(spare.ID))

	for _, tc := range []struct {
		name string
		form url.Values
		code string // "" for success
	}{
		{"no Version", url.Values{"Action": {"DescribeVpcs"}}, "MissingParameter"},
		{"a Version EC2 does not have", url.Values{"Action": {"DescribeVpcs"}, "Version": {"2009-01-01"}}, "NoSuchVersion"},
		{"a malformed NextToken", form("DescribeNetworkInterfaces", "MaxResults", "5", "NextToken", "!!!"), "InvalidParameterValue"},
		{"a NextToken EC2 did not issue", form("DescribeNetworkInterfaces", "MaxResults", "5", "NextToken", foreignToken), "InvalidParameterValue"},
		{"a negative MaxResults", form("DescribeNetworkInterfaces", "MaxResults", "-5"), "InvalidParameterValue"},
		{"a negative SecondaryPrivateIpAddressCount", form("CreateNetworkInterface", "SubnetId", c.subnet.ID, "SecondaryPrivateIpAddressCount", "-1"), "InvalidParameterValue"},
		{"a negative Ipv4PrefixCount", form("CreateNetworkInterface", "SubnetId", c.subnet.ID, "Ipv4PrefixCount", "-1"), "InvalidParameterValue"},
		{"a negative Ipv6AddressCount", form("CreateNetworkInterface", "SubnetId", c.subnet.ID, "Ipv6AddressCount", "-1"), "InvalidParameterValue"},
		{"a negative count to assign", form("AssignPrivateIpAddresses", "NetworkInterfaceId", spare.ID, "SecondaryPrivateIpAddressCount", "-2"), "InvalidParameterValue"},
		{"a negative prefix count to assign", form("AssignPrivateIpAddresses", "NetworkInterfaceId", spare.ID, "Ipv4PrefixCount", "-1"), "InvalidParameterValue"},
		{"six security groups", withGroups(form("CreateNetworkInterface", "SubnetId", c.subnet.ID), "SecurityGroupId", 6), "SecurityGroupsPerInterfaceLimitExceeded"},
		{"six security groups by modification", withGroups(form("ModifyNetworkInterfaceAttribute", "NetworkInterfaceId", spare.ID), "SecurityGroupId", 6), "SecurityGroupsPerInterfaceLimitExceeded"},
		{"a 256-character description", form("CreateNetworkInterface", "SubnetId", c.subnet.ID, "Description", long), "InvalidParameterValue"},
		{"a 256-character description by modification", form("ModifyNetworkInterfaceAttribute", "NetworkInterfaceId", spare.ID, "Description.Value", long), "InvalidParameterValue"},
		{"a 256-character group description", form("CreateSecurityGroup", "GroupName", "x", "GroupDescription", long), "InvalidParameterValue"},
		// t3.medium takes 3 interfaces: device indexes 0 to 2.
		{"a device index beyond the instance type's interfaces", form("AttachNetworkInterface", "NetworkInterfaceId", spare.ID, "InstanceId", c.instance.ID, "DeviceIndex", "3"), "InvalidParameterValue"},
		{"deleting the default group", form("DeleteSecurityGroup", "GroupName", "default"), "CannotDelete"},
		{"deleting a group that does not exist", form("DeleteSecurityGroup", "GroupId", "sg-00000000000000000"), "InvalidGroup.NotFound"},
		{"deleting without a group", form("DeleteSecurityGroup"), "MissingParameter"},

		// Just inside the limits.
		{"five security groups", withGroups(form("ModifyNetworkInterfaceAttribute", "NetworkInterfaceId", spare.ID), "SecurityGroupId", 5), ""},
		{"a 255-character description", form("ModifyNetworkInterfaceAttribute", "NetworkInterfaceId", spare.ID, "Description.Value", long[:len(long)-2]), ""},
		{"the last device index", form("AttachNetworkInterface", "NetworkInterfaceId", spare.ID, "InstanceId", c.instance.ID, "DeviceIndex", "2"), ""},
		{"deleting a group that nothing uses", form("DeleteSecurityGroup", "GroupId", groups[5]), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.model.Snapshot().Revision
			status, body := c.post(t, tc.form)
			if tc.code == "" {
				if status != http.StatusOK {
					t.Fatalf("status %d: %s", status, body)
				}
				return
			}
			if status != http.StatusBadRequest || !strings.Contains(body, "<Response><Errors><Error><Code>"+tc.code+"</Code>") || !strings.Contains(body, "<RequestID>") {
				t.Fatalf("status %d body %s, want 400 and %s", status, body, tc.code)
			}
			if after := c.model.Snapshot().Revision; after != before {
				t.Errorf("a refused request changed the model (revision %d to %d)", before, after)
			}
		})
	}
	if _, err := c.model.NetworkInterface(spare.ID); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.model.NetworkInterface(spare.ID); len(n.Groups) != 5 || len([]rune(n.Description)) != vpc.MaxDescription {
		t.Errorf("ENI after the accepted changes: %d groups, description of %d characters", len(n.Groups), len([]rune(n.Description)))
	}
}

// TestDeleteSecurityGroupInUse: a group an interface is in, or that a rule
// of another group refers to, is refused with DependencyViolation until
// that is no longer so, through the SDK.
func TestDeleteSecurityGroupInUse(t *testing.T) {
	c := newCloud(t, Config{})
	api := c.client(noRetries)
	used, err := api.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("used"), Description: aws.String("x")})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := api.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("peer"), Description: aws.String("x")})
	if err != nil {
		t.Fatal(err)
	}
	eni, err := api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(c.subnet.ID), Groups: []string{*used.GroupId}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.model.AuthorizeSecurityGroupRules(*used.GroupId, false, []vpc.Permission{{Protocol: "tcp", FromPort: 80, ToPort: 80, Groups: []vpc.PeerGroup{{GroupID: *peer.GroupId}}}}); err != nil {
		t.Fatal(err)
	}
	_, err = api.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: used.GroupId})
	wantAPIError(t, err, "DependencyViolation")
	_, err = api.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupName: aws.String("peer")})
	wantAPIError(t, err, "DependencyViolation")

	if _, err := api.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: eni.NetworkInterface.NetworkInterfaceId}); err != nil {
		t.Fatal(err)
	}
	out, err := api.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: used.GroupId})
	if err != nil || aws.ToString(out.GroupId) != *used.GroupId {
		t.Fatalf("delete of a group no longer in use: %+v %v", out, err)
	}
	if _, err := api.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupName: aws.String("peer")}); err != nil {
		t.Fatalf("delete of a group no longer referred to: %v", err)
	}
	_, err = api.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{*used.GroupId}})
	wantAPIError(t, err, "InvalidGroup.NotFound")
}

// repeatX reads as an endless run of 'x'.
type repeatX struct{}

func (repeatX) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// TestOversizedBody: a body beyond the limit is answered with an EC2 error
// document the SDK decodes, not a connection reset.
func TestOversizedBody(t *testing.T) {
	c := newCloud(t, Config{Auth: AuthenticatorFunc(func(*http.Request, []byte) (string, error) { return "test", nil })})
	// Just past the limit, and past 64 MiB (where draining once stopped).
	for _, padding := range []int64{3 * maxBody, 100 << 20} {
		prefix := "Action=DescribeVpcs&Version=" + APIVersion + "&Padding="
		req, err := http.NewRequest(http.MethodPost, c.server.URL, io.MultiReader(strings.NewReader(prefix), io.LimitReader(repeatX{}, padding)))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(prefix)) + padding
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("a request with %d bytes of padding: %v, want an error document", padding, err)
		}
		got := readAll(t, resp)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(got, "<Code>InvalidParameterValue</Code>") || !strings.Contains(got, "too large") {
			t.Fatalf("a request with %d bytes of padding: status %d body %s", padding, resp.StatusCode, got)
		}
	}

	sdk := newCloud(t, Config{})
	_, err := sdk.client(noRetries).CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{
		SubnetId: aws.String(sdk.subnet.ID), Description: aws.String(strings.Repeat("d", 2*maxBody))})
	wantAPIError(t, err, "InvalidParameterValue")
}
