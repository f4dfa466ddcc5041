package localvpc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/vpcnet/vpcnet/internal/localvpc/localvpctest"
	"github.com/vpcnet/vpcnet/internal/testenv"
)

// The local VPC tags of this package's test files, one per file, and the
// tag of the namespaces the tests create themselves.
const (
	tagCLI       = "lvcli" // cli_test.go
	tagMetadata  = "lvmd"  // metadata_test.go
	tagDatapath  = "lvdp"  // datapath_test.go
	tagRestart   = "lvrs"  // restart_test.go
	tagLifecycle = "lvlc"  // lifecycle_test.go
	tagCommand   = "lvcmd" // command_test.go
	tagFaults    = "lvft"  // faults_test.go
	tagFiles     = "lvfs"  // instancens_test.go
	tagExternal  = "lvext" // external_test.go
	tagSurvive   = "lvsv"  // survive_test.go
	nsTag        = "lvpc"
)

// envProgram makes the test binary run one of the programs below instead
// of the tests: the tests start it on an instance, where it must behave as
// any program using the AWS SDK there.
const envProgram = "VPCNET_LOCALVPC_TEST_PROGRAM"

func TestMain(m *testing.M) {
	switch p := os.Getenv(envProgram); p {
	case "":
	case "sdk-default-chain":
		os.Exit(sdkDefaultChain())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envProgram, p)
		os.Exit(2)
	}
	for _, tag := range []string{tagCLI, tagMetadata, tagDatapath, tagRestart, tagLifecycle, tagCommand, tagFaults, tagFiles, tagExternal, tagSurvive} {
		localvpctest.CleanLeftovers(tag)
	}
	testenv.CleanLeftovers(nsTag)
	os.Exit(m.Run())
}

// chainReport is what sdkDefaultChain prints.
type chainReport struct {
	Region       string   `json:"region"`
	Endpoint     string   `json:"endpoint"`
	CredSource   string   `json:"credentialSource"`
	AccessKeyID  string   `json:"accessKeyId"`
	HasToken     bool     `json:"hasSessionToken"`
	InstanceID   string   `json:"instanceId"` // from metadata
	InstanceIDs  []string `json:"instanceIds"`
	ErrorMessage string   `json:"error,omitempty"`
}

// sdkDefaultChain is a program as an agent on an instance writes it: the
// SDK's default configuration, with the region from instance metadata and
// nothing else given, then one EC2 call. It prints a chainReport.
func sdkDefaultChain() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var r chainReport
	err := func() error {
		cfg, err := config.LoadDefaultConfig(ctx, config.WithEC2IMDSRegion())
		if err != nil {
			return err
		}
		r.Region = cfg.Region
		creds, err := cfg.Credentials.Retrieve(ctx)
		if err != nil {
			return fmt.Errorf("credentials: %w", err)
		}
		r.CredSource, r.AccessKeyID, r.HasToken = creds.Source, creds.AccessKeyID, creds.SessionToken != ""
		id, err := imds.NewFromConfig(cfg).GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"})
		if err != nil {
			return fmt.Errorf("instance-id: %w", err)
		}
		body, err := io.ReadAll(id.Content)
		id.Content.Close()
		if err != nil {
			return fmt.Errorf("instance-id: %w", err)
		}
		r.InstanceID = string(body)

		client := ec2.NewFromConfig(cfg)
		if e := client.Options().BaseEndpoint; e != nil {
			r.Endpoint = *e
		}
		out, err := client.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
		if err != nil {
			return fmt.Errorf("DescribeInstances: %w", err)
		}
		for _, res := range out.Reservations {
			for _, in := range res.Instances {
				r.InstanceIDs = append(r.InstanceIDs, *in.InstanceId)
			}
		}
		return nil
	}()
	if err != nil {
		r.ErrorMessage = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
	if err != nil {
		return 1
	}
	return 0
}
