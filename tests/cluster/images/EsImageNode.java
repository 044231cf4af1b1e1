import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.PluginBundle;
import org.elasticsearch.plugins.PluginsLoader;

/**
 * The Elasticsearch process of the stand-in image (Containerfile.elasticsearch): the node that
 * tests/backends/es/EsTestNode.java starts, configured the way the official image configures
 * Elasticsearch instead of for a loopback test. Usage: EsImageNode ES_HOME [-Esetting=value...].
 * Settings, later ones winning: the official image's elasticsearch.yml (cluster.name docker-cluster,
 * network.host 0.0.0.0) and ports 9200/9300, then every environment variable named like a setting
 * (two lowercase dot-separated words, e.g. discovery.type=single-node, as the official entrypoint
 * turns into -E options), then the -E arguments. xpack.* settings are ignored: there is no x-pack.
 * Runs until SIGTERM (the container stops), then closes the node.
 */
public final class EsImageNode {
    private static final Pattern SETTING_NAME = Pattern.compile("^[a-z0-9_]+\\.[a-z0-9_]+.*");

    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]).toAbsolutePath();
        Settings.Builder builder = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "docker-cluster")
            .put("node.name", hostname())
            .put("network.host", "0.0.0.0")
            .put("http.port", 9200)
            .put("transport.port", 9300)
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("logger.level", "INFO");
        for (Map.Entry<String, String> e : new TreeMap<>(System.getenv()).entrySet()) {
            if (SETTING_NAME.matcher(e.getKey()).matches() && !e.getValue().isEmpty()) {
                put(builder, e.getKey(), e.getValue());
            }
        }
        for (int i = 1; i < args.length; i++) {
            String arg = args[i];
            int eq = arg.indexOf('=');
            if (!arg.startsWith("-E") || eq < 3) {
                throw new IllegalArgumentException("expected -Esetting=value, got " + arg);
            }
            put(builder, arg.substring(2, eq), arg.substring(eq + 1));
        }
        Settings settings = builder.build();
        Files.createDirectories(home.resolve("config"));
        Files.createDirectories(home.resolve("plugins"));
        LogConfigurator.configureESLogging();
        LogConfigurator.configureWithoutConfig(settings);
        Environment env = new Environment(settings, home.resolve("config"));
        Set<PluginBundle> modules = PluginsLoader.loadModulesBundles(env.modulesDir());
        PluginsLoader loader = PluginsLoader.createPluginsLoader(modules, Set.of(), Map.of());
        Node node = new Node(env, loader);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(10, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            }
            stopped.countDown();
        }));
        node.start();
        System.out.println("READY http " + settings.get("network.host") + ":" + settings.get("http.port"));
        System.out.flush();
        stopped.await();
    }

    private static void put(Settings.Builder builder, String key, String value) {
        if (key.startsWith("xpack.")) {
            System.out.println("ignoring " + key + ": this Elasticsearch has no x-pack");
        } else {
            builder.put(key, value);
        }
    }

    private static String hostname() {
        String name = System.getenv("HOSTNAME");
        if (name != null && !name.isEmpty()) {
            return name;
        }
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (Exception e) {
            return "es-node-0";
        }
    }
}
