package ec2api

import (
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Benchmarks measure the local VPC through the real SDK over loopback HTTP
// with signature verification, throttling disabled.

func benchCloud(b *testing.B, dir string, enis int) (*cloud, *ec2.Client) {
	b.Helper()
	c := newCloudAt(b, dir, Config{Throttle: ThrottleConfig{Disabled: true}})
	big, err := c.model.CreateSubnet(vpcSubnetSpec(c, "10.0.16.0/20"))
	if err != nil {
		b.Fatal(err)
	}
	for range enis {
		if _, err := c.model.CreateNetworkInterface(vpcCreateInput{SubnetID: big.ID, SecondaryCount: 2}); err != nil {
			b.Fatal(err)
		}
	}
	return c, c.client()
}

func BenchmarkDescribeNetworkInterfaces(b *testing.B) {
	for _, n := range []int{10, 500} {
		b.Run(fmt.Sprintf("enis=%d", n), func(b *testing.B) {
			_, api := benchCloud(b, "", n)
			b.ResetTimer()
			for b.Loop() {
				out, err := api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
				if err != nil || len(out.NetworkInterfaces) != n+1 {
					b.Fatalf("%v, %d ENIs", err, len(out.NetworkInterfaces))
				}
			}
		})
	}
}

// BenchmarkRequestsPerSecond reports SDK round trips per second: a filtered
// describe (read path) in parallel, and CreateTags (write path, every call
// saved to disk with fsync).
func BenchmarkRequestsPerSecond(b *testing.B) {
	b.Run("describe-filtered-parallel", func(b *testing.B) {
		c, api := benchCloud(b, "", 50)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []types.Filter{{
					Name: aws.String("attachment.instance-id"), Values: []string{c.instance.ID},
				}}}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})
	b.Run("create-tags-persisted", func(b *testing.B) {
		c, api := benchCloud(b, b.TempDir(), 50)
		b.ResetTimer()
		i := 0
		for b.Loop() {
			i++
			if _, err := api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{c.instance.ID}, Tags: []types.Tag{{
				Key: aws.String("n"), Value: aws.String(fmt.Sprint(i)),
			}}}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	})
}
