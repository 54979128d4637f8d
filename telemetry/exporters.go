package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/credentials"
)

// Every exporter gets every setting explicitly (endpoint, TLS or insecure, headers, compression,
// timeout): the OTLP exporters fall back to the process environment for anything not passed, and
// Settings.Lookup must be the only source.

// tlsConfig loads the CA and client certificate files named by OTEL_EXPORTER_OTLP_*CERTIFICATE/KEY.
func tlsConfig(c otlpConfig) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.certificate != "" {
		pem, err := os.ReadFile(c.certificate)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("telemetry: OTLP CA certificate %s: no PEM certificate found", c.certificate)
		}
		cfg.RootCAs = pool
	}
	if c.clientCert != "" || c.clientKey != "" {
		cert, err := tls.LoadX509KeyPair(c.clientCert, c.clientKey)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func newSpanExporter(ctx context.Context, c otlpConfig) (sdktrace.SpanExporter, error) {
	tlsCfg, err := tlsConfig(c)
	if err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	if c.protocol == protocolGRPC {
		opts := []otlptracegrpc.Option{
			otlptracegrpc.WithEndpointURL(c.endpoint),
			otlptracegrpc.WithHeaders(c.headers),
			otlptracegrpc.WithTimeout(c.timeout),
		}
		if c.compression == "gzip" {
			opts = append(opts, otlptracegrpc.WithCompressor("gzip"))
		}
		if c.insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		} else {
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	} else {
		opts := []otlptracehttp.Option{
			otlptracehttp.WithEndpointURL(c.endpoint),
			otlptracehttp.WithHeaders(c.headers),
			otlptracehttp.WithTimeout(c.timeout),
			otlptracehttp.WithCompression(httpTraceCompression(c.compression)),
		}
		if c.insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		} else {
			opts = append(opts, otlptracehttp.WithTLSClientConfig(tlsCfg))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP trace exporter: %w", err)
	}
	return exp, nil
}

func httpTraceCompression(s string) otlptracehttp.Compression {
	if s == "gzip" {
		return otlptracehttp.GzipCompression
	}
	return otlptracehttp.NoCompression
}

func temporalitySelector(pref string) sdkmetric.TemporalitySelector {
	switch pref {
	case "delta":
		return func(k sdkmetric.InstrumentKind) metricdata.Temporality {
			switch k {
			case sdkmetric.InstrumentKindUpDownCounter, sdkmetric.InstrumentKindObservableUpDownCounter:
				return metricdata.CumulativeTemporality
			}
			return metricdata.DeltaTemporality
		}
	case "lowmemory":
		return func(k sdkmetric.InstrumentKind) metricdata.Temporality {
			switch k {
			case sdkmetric.InstrumentKindCounter, sdkmetric.InstrumentKindHistogram:
				return metricdata.DeltaTemporality
			}
			return metricdata.CumulativeTemporality
		}
	}
	return sdkmetric.DefaultTemporalitySelector
}

func newMetricExporter(ctx context.Context, c otlpConfig, temporality string) (sdkmetric.Exporter, error) {
	tlsCfg, err := tlsConfig(c)
	if err != nil {
		return nil, err
	}
	sel := temporalitySelector(temporality)
	var exp sdkmetric.Exporter
	if c.protocol == protocolGRPC {
		opts := []otlpmetricgrpc.Option{
			otlpmetricgrpc.WithEndpointURL(c.endpoint),
			otlpmetricgrpc.WithHeaders(c.headers),
			otlpmetricgrpc.WithTimeout(c.timeout),
			otlpmetricgrpc.WithTemporalitySelector(sel),
			otlpmetricgrpc.WithAggregationSelector(sdkmetric.DefaultAggregationSelector),
		}
		if c.compression == "gzip" {
			opts = append(opts, otlpmetricgrpc.WithCompressor("gzip"))
		}
		if c.insecure {
			opts = append(opts, otlpmetricgrpc.WithInsecure())
		} else {
			opts = append(opts, otlpmetricgrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
		}
		exp, err = otlpmetricgrpc.New(ctx, opts...)
	} else {
		comp := otlpmetrichttp.NoCompression
		if c.compression == "gzip" {
			comp = otlpmetrichttp.GzipCompression
		}
		opts := []otlpmetrichttp.Option{
			otlpmetrichttp.WithEndpointURL(c.endpoint),
			otlpmetrichttp.WithHeaders(c.headers),
			otlpmetrichttp.WithTimeout(c.timeout),
			otlpmetrichttp.WithCompression(comp),
			otlpmetrichttp.WithTemporalitySelector(sel),
			otlpmetrichttp.WithAggregationSelector(sdkmetric.DefaultAggregationSelector),
		}
		if c.insecure {
			opts = append(opts, otlpmetrichttp.WithInsecure())
		} else {
			opts = append(opts, otlpmetrichttp.WithTLSClientConfig(tlsCfg))
		}
		exp, err = otlpmetrichttp.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP metric exporter: %w", err)
	}
	return exp, nil
}

func newLogExporter(ctx context.Context, c otlpConfig) (sdklog.Exporter, error) {
	tlsCfg, err := tlsConfig(c)
	if err != nil {
		return nil, err
	}
	var exp sdklog.Exporter
	if c.protocol == protocolGRPC {
		opts := []otlploggrpc.Option{
			otlploggrpc.WithEndpointURL(c.endpoint),
			otlploggrpc.WithHeaders(c.headers),
			otlploggrpc.WithTimeout(c.timeout),
		}
		if c.compression == "gzip" {
			opts = append(opts, otlploggrpc.WithCompressor("gzip"))
		}
		if c.insecure {
			opts = append(opts, otlploggrpc.WithInsecure())
		} else {
			opts = append(opts, otlploggrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
		}
		exp, err = otlploggrpc.New(ctx, opts...)
	} else {
		comp := otlploghttp.NoCompression
		if c.compression == "gzip" {
			comp = otlploghttp.GzipCompression
		}
		opts := []otlploghttp.Option{
			otlploghttp.WithEndpointURL(c.endpoint),
			otlploghttp.WithHeaders(c.headers),
			otlploghttp.WithTimeout(c.timeout),
			otlploghttp.WithCompression(comp),
		}
		if c.insecure {
			opts = append(opts, otlploghttp.WithInsecure())
		} else {
			opts = append(opts, otlploghttp.WithTLSClientConfig(tlsCfg))
		}
		exp, err = otlploghttp.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP log exporter: %w", err)
	}
	return exp, nil
}
