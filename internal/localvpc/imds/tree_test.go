package imds

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var launch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// instanceA has two ENIs: a primary with IPv4 only, and a secondary with
// secondary addresses, a prefix and IPv6.
var instanceA = Instance{
	ID:                 "i-0aaaaaaaaaaaaaaa1",
	Type:               "t3.medium",
	AMIID:              "ami-0123456789abcdef0",
	AccountID:          "123456789012",
	LaunchTime:         launch,
	Region:             "us-east-1",
	AvailabilityZone:   "us-east-1a",
	AvailabilityZoneID: "use1-az4",
	Interfaces: []Interface{
		{
			MAC: "0e:00:00:00:0a:01", InterfaceID: "eni-0aaaaaaaaaaaaaa01",
			LocalIPv4s: []string{"10.0.1.5"},
			SubnetID:   "subnet-0aaaaaaaaaaaaaaa1", SubnetIPv4CIDR: "10.0.1.0/24",
			VPCID: "vpc-0aaaaaaaaaaaaaaa1", VPCIPv4CIDRs: []string{"10.0.0.0/16", "100.64.0.0/16"},
			SecurityGroupIDs: []string{"sg-0aaaaaaaaaaaaaaa1", "sg-0aaaaaaaaaaaaaaa2"}, SecurityGroupNames: []string{"default", "web"},
		},
		{
			MAC: "0e:00:00:00:0a:02", InterfaceID: "eni-0aaaaaaaaaaaaaa02", DeviceNumber: 1,
			LocalIPv4s:   []string{"10.0.2.7", "10.0.2.8", "10.0.2.9"},
			IPv4Prefixes: []string{"10.0.2.32/28"},
			IPv6s:        []string{"2600:1f18::7", "2600:1f18::8"},
			IPv6Prefixes: []string{"2600:1f18:0:0:1::/80"},
			SubnetID:     "subnet-0aaaaaaaaaaaaaaa2", SubnetIPv4CIDR: "10.0.2.0/24", SubnetIPv6CIDRs: []string{"2600:1f18::/64"},
			VPCID: "vpc-0aaaaaaaaaaaaaaa1", VPCIPv4CIDRs: []string{"10.0.0.0/16", "100.64.0.0/16"}, VPCIPv6CIDRs: []string{"2600:1f18::/56"},
			SecurityGroupIDs: []string{"sg-0aaaaaaaaaaaaaaa1"}, SecurityGroupNames: []string{"default"},
		},
	},
	RoleName:          "node-role",
	InstanceProfileID: "AIPAEXAMPLEPROFILE01",
	Credentials: Credentials{
		AccessKeyID: "ASIAINSTANCEA", SecretAccessKey: "secret-a", Token: "token-a",
		Expiration:  launch.Add(6 * time.Hour),
		LastUpdated: launch,
	},
}

// instanceB is in another region, with no role and a named host.
var instanceB = Instance{
	ID:               "i-0bbbbbbbbbbbbbbb2",
	Type:             "m5.large",
	AMIID:            "ami-0fedcba9876543210",
	Architecture:     "arm64",
	AccountID:        "123456789012",
	LaunchTime:       launch,
	Region:           "eu-west-1",
	AvailabilityZone: "eu-west-1b",
	Hostname:         "node-b.example.internal",
	Interfaces: []Interface{{
		MAC: "0e:00:00:00:0b:01", InterfaceID: "eni-0bbbbbbbbbbbbbb01",
		LocalIPv4s: []string{"10.1.1.9"},
		SubnetID:   "subnet-0bbbbbbbbbbbbbbb1", SubnetIPv4CIDR: "10.1.1.0/24",
		VPCID: "vpc-0bbbbbbbbbbbbbbb1", VPCIPv4CIDRs: []string{"10.1.0.0/16"},
		SecurityGroupIDs: []string{"sg-0bbbbbbbbbbbbbbb1"}, SecurityGroupNames: []string{"default"},
	}},
}

// TestTree: what each path serves, as plain text, for the instance asking.
func TestTree(t *testing.T) {
	const eth0 = "/latest/meta-data/network/interfaces/macs/0e:00:00:00:0a:01/"
	const eth1 = "/latest/meta-data/network/interfaces/macs/0e:00:00:00:0a:02/"
	tests := []struct {
		inst Instance
		path string
		want string // "" means 404
	}{
		{instanceA, "/", strings.Join(versions, "\n")},
		{instanceA, "/latest", "dynamic\nmeta-data"},
		{instanceA, "/latest/", "dynamic\nmeta-data"},
		{instanceA, "/latest/meta-data/", "ami-id\nhostname\niam/\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\nsecurity-groups"},
		{instanceB, "/latest/meta-data/", "ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\nsecurity-groups"},
		{instanceA, "/latest/meta-data/instance-id", "i-0aaaaaaaaaaaaaaa1"},
		{instanceA, "/latest/meta-data/instance-id/", "i-0aaaaaaaaaaaaaaa1"},
		{instanceA, "/2021-07-15/meta-data/instance-id", "i-0aaaaaaaaaaaaaaa1"},
		{instanceA, "/1.0/meta-data/instance-type", "t3.medium"},
		{instanceA, "/2099-01-01/meta-data/instance-id", ""},
		{instanceA, "/latest/meta-data/ami-id", "ami-0123456789abcdef0"},
		{instanceA, "/latest/meta-data/hostname", "ip-10-0-1-5.ec2.internal"},
		{instanceA, "/latest/meta-data/local-hostname", "ip-10-0-1-5.ec2.internal"},
		{instanceB, "/latest/meta-data/local-hostname", "node-b.example.internal"},
		{instanceA, "/latest/meta-data/local-ipv4", "10.0.1.5"},
		{instanceA, "/latest/meta-data/mac", "0e:00:00:00:0a:01"},
		{instanceA, "/latest/meta-data/security-groups", "default\nweb"},
		{instanceA, "/latest/meta-data/placement/", "availability-zone\navailability-zone-id\nregion"},
		{instanceB, "/latest/meta-data/placement", "availability-zone\nregion"},
		{instanceA, "/latest/meta-data/placement/availability-zone", "us-east-1a"},
		{instanceA, "/latest/meta-data/placement/availability-zone/", "us-east-1a"},
		{instanceA, "/latest/meta-data/placement/availability-zone-id", "use1-az4"},
		{instanceB, "/latest/meta-data/placement/availability-zone-id", ""},
		{instanceA, "/latest/meta-data/placement/region", "us-east-1"},
		{instanceA, "/latest/meta-data/network/", "interfaces/"},
		{instanceA, "/latest/meta-data/network/interfaces/", "macs/"},
		{instanceA, "/latest/meta-data/network/interfaces/macs/", "0e:00:00:00:0a:01/\n0e:00:00:00:0a:02/"},
		{instanceA, "/latest/meta-data/network/interfaces/macs", "0e:00:00:00:0a:01/\n0e:00:00:00:0a:02/"},
		{instanceA, eth0, "device-number\ninterface-id\nlocal-hostname\nlocal-ipv4s\nmac\nnetwork-card\nowner-id\nsecurity-group-ids\nsecurity-groups\nsubnet-id\nsubnet-ipv4-cidr-block\nvpc-id\nvpc-ipv4-cidr-block\nvpc-ipv4-cidr-blocks"},
		{instanceA, eth1, "device-number\ninterface-id\nipv4-prefix\nipv6-prefix\nipv6s\nlocal-hostname\nlocal-ipv4s\nmac\nnetwork-card\nowner-id\nsecurity-group-ids\nsecurity-groups\nsubnet-id\nsubnet-ipv4-cidr-block\nsubnet-ipv6-cidr-blocks\nvpc-id\nvpc-ipv4-cidr-block\nvpc-ipv4-cidr-blocks\nvpc-ipv6-cidr-blocks"},
		{instanceA, eth0 + "device-number", "0"},
		{instanceA, eth1 + "device-number", "1"},
		{instanceA, eth1 + "network-card", "0"},
		{instanceA, eth1 + "interface-id", "eni-0aaaaaaaaaaaaaa02"},
		{instanceA, eth1 + "mac", "0e:00:00:00:0a:02"},
		{instanceA, eth1 + "owner-id", "123456789012"},
		{instanceA, eth1 + "local-hostname", "ip-10-0-2-7.ec2.internal"},
		{instanceA, eth1 + "local-ipv4s", "10.0.2.7\n10.0.2.8\n10.0.2.9"},
		{instanceA, eth1 + "ipv4-prefix", "10.0.2.32/28"},
		{instanceA, eth1 + "ipv6s", "2600:1f18::7\n2600:1f18::8"},
		{instanceA, eth1 + "ipv6-prefix", "2600:1f18:0:0:1::/80"},
		{instanceA, eth1 + "subnet-id", "subnet-0aaaaaaaaaaaaaaa2"},
		{instanceA, eth1 + "subnet-ipv4-cidr-block", "10.0.2.0/24"},
		{instanceA, eth1 + "subnet-ipv6-cidr-blocks", "2600:1f18::/64"},
		{instanceA, eth1 + "vpc-id", "vpc-0aaaaaaaaaaaaaaa1"},
		{instanceA, eth1 + "vpc-ipv4-cidr-block", "10.0.0.0/16"},
		{instanceA, eth1 + "vpc-ipv4-cidr-blocks", "10.0.0.0/16\n100.64.0.0/16"},
		{instanceA, eth1 + "vpc-ipv6-cidr-blocks", "2600:1f18::/56"},
		{instanceA, eth0 + "security-group-ids", "sg-0aaaaaaaaaaaaaaa1\nsg-0aaaaaaaaaaaaaaa2"},
		{instanceA, eth0 + "security-groups", "default\nweb"},
		// What an ENI does not have is absent, not empty.
		{instanceA, eth0 + "ipv6s", ""},
		{instanceA, eth0 + "ipv4-prefix", ""},
		{instanceA, eth0 + "ipv6-prefix", ""},
		{instanceA, eth0 + "subnet-ipv6-cidr-blocks", ""},
		{instanceA, eth0 + "vpc-ipv6-cidr-blocks", ""},
		{instanceA, "/latest/meta-data/network/interfaces/macs/0e:00:00:00:0b:01/mac", ""},
		{instanceB, "/latest/meta-data/network/interfaces/macs/0e:00:00:00:0b:01/local-hostname", "ip-10-1-1-9.eu-west-1.compute.internal"},
		{instanceA, "/latest/meta-data/iam/", "info\nsecurity-credentials/"},
		{instanceA, "/latest/meta-data/iam/security-credentials/", "node-role"},
		{instanceA, "/latest/meta-data/iam/security-credentials/other-role", ""},
		{instanceB, "/latest/meta-data/iam/", ""},
		{instanceB, "/latest/meta-data/iam/security-credentials/", ""},
		{instanceA, "/latest/meta-data/iam/info", `{
  "Code" : "Success",
  "LastUpdated" : "2025-01-02T03:04:05Z",
  "InstanceProfileArn" : "arn:aws:iam::123456789012:instance-profile/node-role",
  "InstanceProfileId" : "AIPAEXAMPLEPROFILE01"
}`},
		{instanceA, "/latest/meta-data/iam/security-credentials/node-role", `{
  "Code" : "Success",
  "LastUpdated" : "2025-01-02T03:04:05Z",
  "Type" : "AWS-HMAC",
  "AccessKeyId" : "ASIAINSTANCEA",
  "SecretAccessKey" : "secret-a",
  "Token" : "token-a",
  "Expiration" : "2025-01-02T09:04:05Z"
}`},
		{instanceA, "/latest/dynamic/", "instance-identity/"},
		{instanceA, "/latest/dynamic/instance-identity/", "document"},
		{instanceB, "/latest/dynamic/instance-identity/document", `{
  "accountId" : "123456789012",
  "architecture" : "arm64",
  "availabilityZone" : "eu-west-1b",
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : "ami-0fedcba9876543210",
  "instanceId" : "i-0bbbbbbbbbbbbbbb2",
  "instanceType" : "m5.large",
  "kernelId" : null,
  "pendingTime" : "2025-01-02T03:04:05Z",
  "privateIp" : "10.1.1.9",
  "ramdiskId" : null,
  "region" : "eu-west-1",
  "version" : "2017-09-30"
}`},
		{instanceA, "/latest/user-data", ""},
		{instanceA, "/latest/meta-data/instance-id/extra", ""},
		{instanceA, "/latest/meta-data/nonexistent", ""},
		{instanceA, "/latest/api", ""},
	}
	for _, tt := range tests {
		n := resolve(tt.inst, tt.path)
		switch {
		case tt.want == "" && n != nil:
			t.Errorf("%s %s: served %q, want 404", tt.inst.ID, tt.path, n.text())
		case tt.want != "" && n == nil:
			t.Errorf("%s %s: 404, want %q", tt.inst.ID, tt.path, tt.want)
		case tt.want != "" && n.text() != tt.want:
			t.Errorf("%s %s:\n got %q\nwant %q", tt.inst.ID, tt.path, n.text(), tt.want)
		}
	}
}

func TestPrivateDNSName(t *testing.T) {
	tests := []struct{ ip, region, want string }{
		{"10.0.1.5", "us-east-1", "ip-10-0-1-5.ec2.internal"},
		{"192.168.255.1", "ap-southeast-2", "ip-192-168-255-1.ap-southeast-2.compute.internal"},
		{"2600:1f18::7", "us-east-1", ""},
		{"not-an-ip", "us-east-1", ""},
	}
	for _, tt := range tests {
		if got := privateDNSName(tt.ip, tt.region); got != tt.want {
			t.Errorf("privateDNSName(%q, %q) = %q, want %q", tt.ip, tt.region, got, tt.want)
		}
	}
}

func TestParseTokenTTL(t *testing.T) {
	tests := []struct {
		values []string
		want   time.Duration // 0 means refused
	}{
		{[]string{"1"}, time.Second},
		{[]string{"300"}, 5 * time.Minute},
		{[]string{"21600"}, 6 * time.Hour},
		{nil, 0},
		{[]string{""}, 0},
		{[]string{"0"}, 0},
		{[]string{"-1"}, 0},
		{[]string{"21601"}, 0},
		{[]string{"1.5"}, 0},
		{[]string{"abc"}, 0},
		{[]string{"60", "60"}, 0},
	}
	for _, tt := range tests {
		got, err := parseTokenTTL(tt.values)
		if tt.want == 0 {
			if err == nil {
				t.Errorf("parseTokenTTL(%q) = %v, want an error", tt.values, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseTokenTTL(%q) = %v, %v; want %v", tt.values, got, err, tt.want)
		}
	}
}

func TestTokens(t *testing.T) {
	issuer, other := newTokenIssuer(), newTokenIssuer()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tok := issuer.issue("i-1", now.Add(time.Minute))
	tests := []struct {
		name     string
		tok      string
		instance string
		at       time.Time
		want     error
	}{
		{"valid", tok, "i-1", now, nil},
		{"valid until the last millisecond", tok, "i-1", now.Add(time.Minute - time.Millisecond), nil},
		{"expired", tok, "i-1", now.Add(time.Minute), errTokenExpired},
		{"other instance", tok, "i-2", now, errTokenInstance},
		{"instance ID prefix", issuer.issue("i-10", now.Add(time.Minute)), "i-1", now, errTokenInstance},
		{"other issuer", other.issue("i-1", now.Add(time.Minute)), "i-1", now, errTokenForged},
		{"not base64", "not base64!", "i-1", now, errTokenMalformed},
		{"too short", "AQID", "i-1", now, errTokenMalformed},
		{"bit flipped", flipLastByte(tok), "i-1", now, errTokenForged},
	}
	for _, tt := range tests {
		if err := issuer.verify(tt.tok, tt.instance, tt.at); !errors.Is(err, tt.want) {
			t.Errorf("%s: verify = %v, want %v", tt.name, err, tt.want)
		}
	}
}

// flipLastByte changes the last byte of an encoded token (its MAC).
func flipLastByte(s string) string {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	b[len(b)-1] ^= 1
	return base64.StdEncoding.EncodeToString(b)
}
