// Package cloudfront purges CloudFront through its own API client.
package cloudfront

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudfront"
	"github.com/aws/aws-sdk-go-v2/service/cloudfront/types"

	"github.com/custody-dev/custody/services/cdn-broker/internal/purge"
)

// Purger purges through CloudFront's CreateInvalidation API.
type Purger struct {
	client       *cloudfront.Client
	distribution string
	basePath     string
}

// Config configures a CloudFront purger.
type Config struct {
	// DistributionID is the distribution in front of the edges.
	DistributionID string
	// BasePath is the path prefix of the distribution's base URL ("" or
	// "/prefix").
	BasePath string
	// AccessKeyID and SecretAccessKey are the IAM credentials, read by the
	// caller from files; they are never logged.
	AccessKeyID, SecretAccessKey string
	// Endpoint overrides the API endpoint (tests); empty: AWS.
	Endpoint string
	// HTTPClient is optional.
	HTTPClient *http.Client
}

// New returns a purger for one distribution.
func New(c Config) (*Purger, error) {
	if c.DistributionID == "" || strings.ContainsAny(c.DistributionID, "/?#% ") {
		return nil, fmt.Errorf("%w: CloudFront distribution ID %q", purge.ErrInvalid, c.DistributionID)
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return nil, fmt.Errorf("%w: CloudFront purges need an access key ID and secret", purge.ErrInvalid)
	}
	opts := cloudfront.Options{
		Region:           "us-east-1", // CloudFront's API is global and signed for us-east-1.
		Credentials:      credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""),
		RetryMaxAttempts: 3,
	}
	if c.Endpoint != "" {
		opts.BaseEndpoint = aws.String(c.Endpoint)
	}
	if c.HTTPClient != nil {
		opts.HTTPClient = c.HTTPClient
	}
	return &Purger{client: cloudfront.New(opts), distribution: c.DistributionID, basePath: strings.TrimSuffix(c.BasePath, "/")}, nil
}

// Purge invalidates the digest's path and returns the invalidation's ID.
// ref is the CallerReference: the same ref and path return the earlier
// invalidation instead of creating another.
func (p *Purger) Purge(ctx context.Context, d, ref string) (string, error) {
	path, err := purge.BlobPath(p.basePath, d, ref)
	if err != nil {
		return "", err
	}
	out, err := p.client.CreateInvalidation(ctx, &cloudfront.CreateInvalidationInput{
		DistributionId: aws.String(p.distribution),
		InvalidationBatch: &types.InvalidationBatch{
			CallerReference: aws.String(ref),
			Paths:           &types.Paths{Quantity: aws.Int32(1), Items: []string{path}},
		},
	})
	if err != nil {
		return "", fmt.Errorf("CloudFront invalidation of %s on distribution %s: %w", path, p.distribution, err)
	}
	if out.Invalidation == nil || out.Invalidation.Id == nil {
		return "", fmt.Errorf("CloudFront invalidation of %s: no invalidation ID in the reply", path)
	}
	return *out.Invalidation.Id, nil
}
